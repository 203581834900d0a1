package verdict

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"podwall.io/podwall/api/policy"
)

// Line is one line of the verdict log, of any kind (see the package documentation): each kind's fields
// are zero on the other kinds. Encoding leaves zero fields out; the
// sidecar writes every field of a line's kind.
type Line struct {
	// Time is when the line was made.
	Time time.Time `json:"time"`
	// Pod, Namespace and Workload ("Kind/name") name the guarded pod.
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`

	// Direction is which way the connection goes, seen from the pod.
	Direction policy.Direction `json:"direction,omitzero"`
	// Proto is the connection's L4 protocol.
	Proto Proto `json:"proto,omitzero"`
	// Src and Dst are the connection's ends as the packet carried them.
	Src netip.AddrPort `json:"src,omitzero"`
	Dst netip.AddrPort `json:"dst,omitzero"`
	// Peer is what the remote end was judged as ("workload:ns/Kind/name", "cidr:prefix", ...).
	Peer string `json:"peer,omitempty"`
	// DstName is the DNS name the destination address came from: the name a DNS answer the pod
	// received mapped to it (allow, deny and audit lines alike), or, on a DNS query's own verdict
	// line, the name the query asked for.
	DstName string `json:"dst_name,omitempty"`
	// Verdict is what happened to the connection.
	Verdict policy.Verdict `json:"verdict,omitzero"`
	// Rule is the id of the rule that decided, "default" for the mode's default, or "loopback-default".
	Rule string `json:"rule,omitempty"`
	// Mode is the mode enforced, after any override.
	Mode policy.Mode `json:"mode,omitempty"`
	// PolicyRevision is the revision of the policy in force.
	PolicyRevision int64 `json:"policy_revision,omitzero"`
	// Canary says the pod is one of its workload's canaries (policy.Policy.Canary): it enforces
	// Protect while the workload's other pods stay in Monitor.
	Canary bool `json:"canary,omitzero"`
	// Evaluator is the decision step that decided (the sidecar's decide pipeline), or EvaluatorAllowSet.
	Evaluator string `json:"evaluator,omitempty"`
	// OriginalDst is, for a connection judged behind a redirect, the destination it was judged against.
	OriginalDst netip.AddrPort `json:"original_dst,omitzero"`

	// Suppressed counts the lines not written since Since: RateLimited plus Dropped. It is set on
	// summary lines only, and never zero there.
	Suppressed uint64 `json:"suppressed,omitzero"`
	// RateLimited counts the lines the rate limit refused.
	RateLimited uint64 `json:"rate_limited,omitzero"`
	// Dropped counts the lines dropped because the writer fell behind.
	Dropped uint64 `json:"dropped,omitzero"`
	// SuppressedDeny, SuppressedAudit, SuppressedAllow and SuppressedRevoked split Suppressed by verdict.
	SuppressedDeny    uint64 `json:"suppressed_deny,omitzero"`
	SuppressedAudit   uint64 `json:"suppressed_audit,omitzero"`
	SuppressedAllow   uint64 `json:"suppressed_allow,omitzero"`
	SuppressedRevoked uint64 `json:"suppressed_revoked,omitzero"`
	// Since is when the first suppressed line was suppressed.
	Since time.Time `json:"since,omitzero"`

	// Notice names what a notice line tells (NoticeAppNetRaw); it is set on notice lines only.
	Notice string `json:"notice,omitempty"`
	// Message says it in words, for people.
	Message string `json:"message,omitempty"`
	// Containers are the pod's containers the notice is about.
	Containers []string `json:"containers,omitempty"`
}

// EvaluatorAllowSet is Line.Evaluator for a connection the kernel accepted from the policy's allow sets
// that the decider in force would not have allowed (a new revision being swapped in between the two).
const EvaluatorAllowSet = "allow-set"

// NoticeAppNetRaw tells that app containers of the pod hold CAP_NET_RAW: they can set SO_MARK and
// open raw and packet sockets whose traffic the sidecar does not judge.
const NoticeAppNetRaw = "app-net-raw"

// NoticeConfigRefused tells that the workload's config file (the pod's ConfigMap podwall-config) was
// refused: it set a key only the platform sets, or a looser value than the platform's. The message
// names the keys; the last good configuration stays in force.
const NoticeConfigRefused = "config-refused"

// IsSummary says whether l is a summary line rather than a verdict or notice line.
func (l *Line) IsSummary() bool { return l.Suppressed > 0 }

// IsNotice says whether l is a notice line rather than a verdict or summary line.
func (l *Line) IsNotice() bool { return l.Notice != "" }

// Proto is an IANA protocol number. On a line it is the name policies use for the protocols podwall
// knows (TCP, UDP, SCTP, ICMP, ICMPv6) and the bare number for any other.
type Proto uint8

// protoNames are the protocols written by name (those a rule may name), indexed by number so that the
// verdict path's lookup costs nothing.
var protoNames = func() (names [256]string) {
	for _, p := range policy.Protocols {
		names[p.Number()] = string(p)
	}
	return names
}()

// Name returns the protocol's name on a line, or "" for a protocol written as its number.
func (p Proto) Name() string { return protoNames[p] }

// MarshalJSON writes the protocol's name, or its number.
func (p Proto) MarshalJSON() ([]byte, error) {
	if n := p.Name(); n != "" {
		return strconv.AppendQuote(nil, n), nil
	}
	return strconv.AppendUint(nil, uint64(p), 10), nil
}

// UnmarshalJSON accepts what MarshalJSON writes, and a named protocol's number too.
func (p *Proto) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if bytes.HasPrefix(b, []byte(`"`)) {
		for n, name := range protoNames {
			if name != "" && string(b) == strconv.Quote(name) {
				*p = Proto(n)
				return nil
			}
		}
		return fmt.Errorf("proto %s: not a protocol name", b)
	}
	n, err := strconv.ParseUint(string(b), 10, 8)
	if err != nil {
		return fmt.Errorf("proto %s: want a name or a number up to 255", b)
	}
	*p = Proto(n)
	return nil
}
