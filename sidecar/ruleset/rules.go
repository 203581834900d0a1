package ruleset

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"podwall.io/podwall/api/policy"
)

// The chains of the podwall table.
const (
	// ChainOutput (hook output, priority mangle) judges egress: connections the pod's processes open
	// to remote peers. It runs before NAT (priority -100), so a connection that a mesh proxy's outbound
	// REDIRECT (Envoy 15001, Linkerd 4140) would send to the proxy is judged here, by its real remote,
	// and user space needs no conntrack lookup to find it.
	ChainOutput = "output"
	// ChainInput (hook input) judges ingress, and sends loopback traffic to ChainLoopback.
	ChainInput = "input"
	// ChainLoopback judges connections between the pod's own processes. Loopback is judged on input,
	// where the conntrack entry is already confirmed and user space can look it up.
	ChainLoopback = "loopback"
	// ChainGuardOutput and ChainGuardInput run just before ChainOutput and ChainInput at the same hook
	// and clear the podwall bits of every packet's mark, but MarkSelf on the way to one of the
	// sidecar's own destinations (see guard).
	ChainGuardOutput = "guard_output"
	ChainGuardInput  = "guard_input"
)

// The guard chains' priorities: one before the chain each guards, so that marks set by anything
// registered earlier at the hook are cleared too.
var (
	priorityGuardOutput = nftables.ChainPriorityRef(*nftables.ChainPriorityMangle - 1)
	priorityGuardInput  = nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1)
)

// chainSpec is one chain to create and its rules, in order.
type chainSpec struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// buildChains returns every chain of the table with its rules, the allow sets' names followed by
// allowSuffix (see Compiled.Apply). It does no I/O. The rules depend on the options, the policy's mode
// and whether it restricts DNS, never on the size of the policy.
func buildChains(t *nftables.Table, o Options, p *Compiled, allowSuffix string) []chainSpec {
	b := builder{o: o, refuse: p.mode == policy.Protect || o.Offline, memo: o.usesDenyMemo(p.mode), restrictDNS: p.restrictDNS,
		allowSuffix: allowSuffix}
	accept := nftables.ChainPolicyAccept
	base := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Table: t, Name: name, Type: nftables.ChainTypeFilter, Hooknum: hook,
			Priority: prio, Policy: &accept}
	}
	chains := []chainSpec{
		{base(ChainGuardOutput, nftables.ChainHookOutput, priorityGuardOutput), guard()},
		{base(ChainOutput, nftables.ChainHookOutput, nftables.ChainPriorityMangle), b.output()},
		{base(ChainGuardInput, nftables.ChainHookInput, priorityGuardInput), guard()},
		{base(ChainInput, nftables.ChainHookInput, nftables.ChainPriorityFilter), b.input()},
		{&nftables.Chain{Table: t, Name: ChainLoopback}, b.loopback()},
	}
	if o.observesDNS() {
		chains = append(chains,
			chainSpec{&nftables.Chain{Table: t, Name: ChainDNSOutput}, b.dnsOutput()},
			chainSpec{&nftables.Chain{Table: t, Name: ChainDNSQuery}, b.dnsQuery()},
			chainSpec{&nftables.Chain{Table: t, Name: ChainDNSTrack}, b.dnsTrack()},
			chainSpec{&nftables.Chain{Table: t, Name: ChainDNSInput}, b.dnsInput()},
		)
	}
	return chains
}

// builder builds the rules of each chain.
type builder struct {
	o Options
	// refuse says whether what no rule allows is refused (Protect, or no verdict loop at all) or
	// accepted (Learn and Monitor, which the verdict loop only logs).
	refuse bool
	// memo says whether denied keys are remembered and refused in the kernel (see memoDenied).
	memo bool
	// restrictDNS says whether every DNS query goes to the verdict loop to be judged by its name
	// (policy.Policy.RestrictDNS); otherwise a UDP query on a flow the kernel knows is let through
	// and tracked in the kernel alone (see dnsQuery).
	restrictDNS bool
	// allowSuffix follows the names of the allow sets the rules look up.
	allowSuffix string
}

// rules collects rules, each the concatenation of its parts.
type rules [][]expr.Any

func (r *rules) add(parts ...[]expr.Any) {
	var rule []expr.Any
	for _, p := range parts {
		rule = append(rule, p...)
	}
	*r = append(*r, rule)
}

var (
	acceptV = []expr.Any{verdict(expr.VerdictAccept)}
	dropV   = []expr.Any{verdict(expr.VerdictDrop)}
)

// guard is the rules of both guard chains. A verdict's NF_REPEAT re-runs only the hook entry that
// queued the packet (the judging chain), never the entries of earlier priority at the hook, so a guard
// chain sees each packet exactly once, as its sender made it: an app holding CAP_NET_RAW can set any
// SO_MARK. Clearing the podwall bits there leaves the verdict loop the only source of MarkAllow and
// MarkDeny the judging chains ever see. MarkSelf is kept only towards the sidecar's own destinations
// (Options.SelfDests), so that a forged MarkSelf reaches nothing else. The other bits of the mark (a
// mesh proxy's) are kept. A packet without podwall bits, nearly every packet, costs one rule.
func guard() [][]expr.Any {
	var r rules
	r.add(markIs(0), acceptV)
	r.add(markIs(MarkSelf), loadKey(keyEgress, false), []expr.Any{lookup(SetSelfDests4, regKey)}, acceptV)
	r.add(markIs(MarkSelf), loadKey(keyEgress, true), []expr.Any{lookup(SetSelfDests6, regKey)}, acceptV)
	r.add(setMark(0))
	return r
}

// prelude is what both judging chains start with. The mark rules come before any queue rule: the
// verdict loop answers a queued packet with NF_REPEAT and MarkAllow or MarkDeny, and the packet
// re-enters the chain from the top carrying it.
func (b builder) prelude(k keyKind) rules {
	var r rules
	r.add(ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), acceptV)
	// Neighbour discovery and MLD: the kernel leaves them untracked, and IPv6 does not work without.
	// Only they pass untracked, each as its RFC's receiver validates it (see ndAndMLD).
	for _, m := range ndAndMLD() {
		r.add(m, acceptV)
	}
	r.add(ctStateIn(expr.CtStateBitINVALID), dropV)
	// The sidecar's own sockets carry MarkSelf (SO_MARK): it reaches policygen and DNS under deny-all.
	// The guard chain has cleared MarkSelf from packets to any other destination. The connection keeps
	// it in its mark, so that revocation knows the connection for the sidecar's own (SelfConn).
	r.add(markIs(MarkSelf), setCtMark(MarkSelf), acceptV)
	b.memoDenied(&r, k)
	r.add(markIs(MarkDeny), reject(true))
	r.add(markIs(MarkDeny), reject(false))
	return r
}

// remember adds the key of an allowed connection to the seen sets (when they are in use), marks the
// connection, and accepts. ICMP flows are never remembered: their key's "port" would be the ICMP
// checksum, so each new ICMP flow (a ping run, one echo identifier) is queued and judged by its type. Adding to a full set fails and ends its rule, so the accept has a rule of
// its own: a full seen set must never send the packet back to the queue.
func (b builder) remember(r *rules, k keyKind, seen4, seen6 string) {
	b.rememberSeen(r, k, seen4, seen6)
	r.add(markIs(MarkAllow), setCtMark(MarkAllow), acceptV)
}

// rememberSeen adds the key of a packet the verdict loop allowed to the seen sets, when they are in
// use; the rule ends there, and the packet goes on to the next.
func (b builder) rememberSeen(r *rules, k keyKind, seen4, seen6 string) {
	if b.o.usesSeen() {
		for _, v6 := range []bool{false, true} {
			set := seen4
			if v6 {
				set = seen6
			}
			r.add(markIs(MarkAllow), notICMP(), loadKey(k, v6),
				[]expr.Any{&expr.Dynset{SrcRegKey: regKey, SetName: set, Operation: dynsetOpAdd}})
		}
	}
}

const (
	// dynsetOpAdd adds a key that is not in the set yet; a key already there keeps its expiry, so an
	// allowed peer is logged again once per Options.SeenTimeout.
	dynsetOpAdd = 0 // NFT_DYNSET_OP_ADD
	// dynsetOpDelete deletes a key from the set; a key that is not there is no error.
	dynsetOpDelete = 2 // NFT_DYNSET_OP_DELETE
)

// known accepts keys the kernel may decide alone: seen ones, and with LogAllowsNone or Offline the
// ones the policy allows (in its exact set or its range set) and, for egress, the addresses DNS
// answers gave for names its FQDN rules allow (in the FQDN exact or range set), until their time to
// live runs out.
func (b builder) known(r *rules, k keyKind, seen4, seen6, allow4, allow6 string) {
	if b.o.usesSeen() {
		r.add(loadKey(k, false), []expr.Any{lookup(seen4, regKey)}, acceptV)
		r.add(loadKey(k, true), []expr.Any{lookup(seen6, regKey)}, acceptV)
	}
	if b.o.DecidesInKernel() {
		acceptIn(r, k, allow4+b.allowSuffix, allow6+b.allowSuffix)
		if k == keyEgress {
			acceptIn(r, k, SetFQDNEgress4, SetFQDNEgress6)
		}
	}
}

// acceptLogged accepts, with Options.AllowLog (and a LogAllows other than none), the keys in a pair of
// split allow sets, ICMP aside: it remembers the key as seen (when the seen sets are in use), copies
// the packet to the log group Options.QueueNum (an inbound one with its original destination port in
// the mark, as a queued one carries it), and accepts. A full seen set ends only its own rule, as in
// remember. The DNS chains do not take this path: a query that opens its flow is queued, so that its
// flow is judged and its name observed.
func (b builder) acceptLogged(r *rules, k keyKind, seen4, seen6, allow4, allow6 string) {
	if !b.o.logsAllows() {
		return
	}
	allow4, allow6 = allow4+b.allowSuffix, allow6+b.allowSuffix
	for _, fam := range []struct {
		v6             bool
		seen, allowSet string
	}{{false, seen4, allow4}, {true, seen6, allow6}} {
		for _, set := range []string{fam.allowSet + exactSuffix, fam.allowSet} {
			match := [][]expr.Any{notICMP(), loadKey(k, fam.v6), {lookup(set, regKey)}}
			if b.o.usesSeen() {
				r.add(append(match, []expr.Any{&expr.Dynset{SrcRegKey: regKey, SetName: fam.seen, Operation: dynsetOpAdd}})...)
			}
			if k == keyIngress {
				match = append(match, markOrigPort())
			}
			r.add(append(match, []expr.Any{logBatched(b.o.QueueNum)}, acceptV)...)
		}
	}
}

// acceptIn accepts the keys in a pair of split sets (see allowFamily): the exact set and the range
// set of each family.
func acceptIn(r *rules, k keyKind, set4, set6 string) {
	for _, fam := range []struct {
		v6  bool
		set string
	}{{false, set4}, {true, set6}} {
		r.add(loadKey(k, fam.v6), []expr.Any{lookup(fam.set+exactSuffix, regKey)}, acceptV)
		r.add(loadKey(k, fam.v6), []expr.Any{lookup(fam.set, regKey)}, acceptV)
	}
}

// midStream refuses, where what no rule allows is refused, a TCP segment that is not a SYN and yet not
// part of a connection conntrack knows: conntrack takes such a segment up as a new connection (a
// connection whose entry was deleted because the policy no longer allows it, say), and its key might
// match a seen or allowed key in the reverse direction. Only a SYN opens a connection, and only the
// verdict loop or the policy's own keys let one through.
func (b builder) midStream(r *rules) {
	if b.refuse {
		r.add(tcpNotSynOnly(), []expr.Any{tcpReset})
	}
}

// queue sends each new connection's opening packet to the verdict loop: for TCP the SYN alone, for
// other protocols the first packet conntrack sees. Offline has no queue rules.
func (b builder) queue(r *rules, pre []expr.Any) {
	if b.o.Offline {
		return
	}
	q := []expr.Any{queueExpr(b.o)}
	r.add(pre, tcpSynOnly(), q)
	r.add(pre, l4protoNot(protoTCP), ctStateIn(expr.CtStateBitNEW), q)
}

// final is the chain's last word on what nothing above decided, which includes whatever slipped past
// the queue: refused in Protect and Offline, accepted (the chains' policy) otherwise.
func (b builder) final(r *rules) {
	if b.refuse {
		r.add(reject(true))
		r.add(reject(false))
	}
}

func (b builder) output() [][]expr.Any {
	var r rules
	b.dnsJump(&r, 2, ChainDNSOutput) // destination port
	r = append(r, b.prelude(keyEgress)...)
	b.remember(&r, keyEgress, SetSeenEgress4, SetSeenEgress6)
	r.add(metaIs(expr.MetaKeyOIF, native32(loIndex)), acceptV) // loopback is judged on input
	b.midStream(&r)
	b.known(&r, keyEgress, SetSeenEgress4, SetSeenEgress6, SetAllowEgress4, SetAllowEgress6)
	b.acceptLogged(&r, keyEgress, SetSeenEgress4, SetSeenEgress6, SetAllowEgress4, SetAllowEgress6)
	b.memoRefuse(&r, keyEgress)
	b.queue(&r, nil)
	b.final(&r)
	return r
}

func (b builder) input() [][]expr.Any {
	var r rules
	b.dnsJump(&r, 0, ChainDNSInput) // source port
	r = append(r, b.prelude(keyIngress)...)
	r.add(metaIs(expr.MetaKeyIIF, native32(loIndex)), []expr.Any{jump(ChainLoopback)})
	b.remember(&r, keyIngress, SetSeenIngress4, SetSeenIngress6)
	// Kubelet probes and scrapes reach the sidecar in every mode.
	r.add(tcpDportIn(SetSelfPorts), acceptV)
	b.midStream(&r)
	b.known(&r, keyIngress, SetSeenIngress4, SetSeenIngress6, SetAllowIngress4, SetAllowIngress6)
	b.acceptLogged(&r, keyIngress, SetSeenIngress4, SetSeenIngress6, SetAllowIngress4, SetAllowIngress6)
	b.memoRefuse(&r, keyIngress)
	if !b.o.Offline {
		r.add(markOrigPort())
	}
	b.queue(&r, nil)
	b.final(&r)
	return r
}

// loopback: connections to ports of the policy's loopback deny rules are queued, so that user space
// logs the deny and refuses it; the rest is the pod talking to itself and passes. A revoked connection
// is not taken up mid-stream here either: its server's next segment would not name the denied port. The port is the
// original one: a connection to the pod's own address that a mesh proxy redirects to itself (hairpin)
// is judged on the port the app asked for.
func (b builder) loopback() [][]expr.Any {
	var r rules
	r.add(markIs(MarkAllow), setCtMark(MarkAllow), acceptV)
	b.midStream(&r)
	denied := append(loadProtoOrigPort(), lookup(SetLoopbackDeny, regKey32))
	b.queue(&r, denied)
	if b.refuse {
		r.add(denied, reject(true))
		r.add(denied, reject(false))
	}
	r.add(acceptV)
	return r
}
