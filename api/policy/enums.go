package policy

import "fmt"

// Mode is the enforcement mode of a workload.
// +kubebuilder:validation:Enum=Learn;Monitor;Protect
type Mode string

// The modes, in the order a workload is promoted through them.
const (
	// Learn allows everything and records every new connection, which policygen turns into learned
	// rules.
	Learn Mode = "Learn"
	// Monitor allows everything and logs what Protect would deny as an audit.
	Monitor Mode = "Monitor"
	// Protect enforces: what no rule allows is refused.
	Protect Mode = "Protect"
)

// Strictest is the strictest of the modes given (Learn < Monitor < Protect); an empty mode is no
// mode at all, and none at all gives "". A mode set in configuration is a floor: the mode enforced is
// the strictest of the policy's and the configured ones.
func Strictest(modes ...Mode) Mode {
	var out Mode
	for _, m := range modes {
		if m.rank() > out.rank() {
			out = m
		}
	}
	return out
}

// Weaker reports whether m is a weaker mode than than (Learn < Monitor < Protect); an empty or unknown
// mode is weaker than any mode.
func (m Mode) Weaker(than Mode) bool { return m.rank() < than.rank() }

func (m Mode) rank() int {
	switch m {
	case Learn:
		return 1
	case Monitor:
		return 2
	case Protect:
		return 3
	}
	return 0
}

// Protocol is an L4 protocol a rule may name.
// +kubebuilder:validation:Enum=TCP;UDP;SCTP;ICMP;ICMPv6
type Protocol string

// The protocols a port rule may name. ICMP and ICMPv6 have no ports: a rule names their message
// types instead (PortRange.Types).
const (
	TCP    Protocol = "TCP"
	UDP    Protocol = "UDP"
	SCTP   Protocol = "SCTP"
	ICMP   Protocol = "ICMP"
	ICMPv6 Protocol = "ICMPv6"
)

// Protocols are every protocol a rule may name.
var Protocols = []Protocol{TCP, UDP, SCTP, ICMP, ICMPv6}

// Number returns the IANA protocol number.
func (p Protocol) Number() uint8 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	case SCTP:
		return 132
	case ICMP:
		return 1
	case ICMPv6:
		return 58
	}
	return 0
}

// IsICMP says whether p is ICMP or ICMPv6, whose flows carry a message type instead of ports.
func (p Protocol) IsICMP() bool { return p == ICMP || p == ICMPv6 }

// ProtocolOf returns the protocol with IANA number n, or "" for one a rule cannot name.
func ProtocolOf(n uint8) Protocol {
	for _, p := range Protocols {
		if p.Number() == n {
			return p
		}
	}
	return ""
}

// Origin says who wrote a rule; policygen rewrites manifest and learned rules and never touches user
// rules.
// +kubebuilder:validation:Enum=manifest;learned;user
type Origin string

// The origins of a rule.
const (
	OriginManifest Origin = "manifest"
	OriginLearned  Origin = "learned"
	OriginUser     Origin = "user"
)

// Action is what a loopback rule does.
// +kubebuilder:validation:Enum=allow;deny
type Action string

// The loopback actions.
const (
	ActionAllow Action = "allow"
	ActionDeny  Action = "deny"
)

// Verdict is what happened to a connection. It is a small integer so that the verdict path neither
// allocates nor compares strings; on the wire (reports, verdict lines) it is its name. The zero
// Verdict is invalid, so that a forgotten field fails closed.
type Verdict uint8

// The verdicts.
const (
	Allow Verdict = iota + 1
	Deny
	// Audit allows a connection that Protect would deny (Monitor mode).
	Audit
	// Revoked cuts an established connection that an earlier policy revision (or Learn or Monitor)
	// admitted and that the policy now in force refuses.
	Revoked
)

var verdictNames = [...]string{Allow: "allow", Deny: "deny", Audit: "audit", Revoked: "revoked"}

// String returns the verdict's wire name.
func (v Verdict) String() string { return name(verdictNames[:], v) }

// Valid says whether v is one of the verdicts.
func (v Verdict) Valid() bool { return v != 0 && int(v) < len(verdictNames) }

// MarshalText encodes the verdict as its name; the zero Verdict cannot be encoded.
func (v Verdict) MarshalText() ([]byte, error) { return marshal(verdictNames[:], v, "verdict") }

// UnmarshalText accepts exactly the names String returns.
func (v *Verdict) UnmarshalText(b []byte) error { return unmarshal(verdictNames[:], v, b, "verdict") }

// Direction says which way a connection goes, seen from the pod. The zero Direction is invalid.
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Enum=ingress;egress;loopback
type Direction uint8

// The directions.
const (
	// Ingress: a remote peer connects to the pod.
	Ingress Direction = iota + 1
	// Egress: the pod connects to a remote peer.
	Egress
	// Loopback: a process in the pod connects to a port in the pod.
	Loopback
)

var directionNames = [...]string{Ingress: "ingress", Egress: "egress", Loopback: "loopback"}

// String returns the direction's wire name.
func (d Direction) String() string { return name(directionNames[:], d) }

// Valid says whether d is one of the directions.
func (d Direction) Valid() bool { return d != 0 && int(d) < len(directionNames) }

// MarshalText encodes the direction as its name; the zero Direction cannot be encoded.
func (d Direction) MarshalText() ([]byte, error) { return marshal(directionNames[:], d, "direction") }

// UnmarshalText accepts exactly the names String returns.
func (d *Direction) UnmarshalText(b []byte) error {
	return unmarshal(directionNames[:], d, b, "direction")
}

// name, marshal and unmarshal serve the small-integer enums above, whose names are indexed by value.
func name[E ~uint8](names []string, e E) string {
	if e == 0 || int(e) >= len(names) {
		return "invalid"
	}
	return names[e]
}

func marshal[E ~uint8](names []string, e E, what string) ([]byte, error) {
	if e == 0 || int(e) >= len(names) {
		return nil, fmt.Errorf("%s %d is invalid", what, e)
	}
	return []byte(names[e]), nil
}

func unmarshal[E ~uint8](names []string, e *E, b []byte, what string) error {
	for i, n := range names {
		if i > 0 && n == string(b) {
			*e = E(i)
			return nil
		}
	}
	return fmt.Errorf("%s %q: want one of %v", what, b, names[1:])
}
