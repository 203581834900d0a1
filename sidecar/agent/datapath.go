package agent

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/prometheus/client_golang/prometheus"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/dnsobs"
	"podwall.io/podwall/sidecar/nflog"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/packet"
	"podwall.io/podwall/sidecar/report"
	"podwall.io/podwall/sidecar/ruleset"
)

// loIndex is the loopback interface's index, the same in every network namespace.
const loIndex = 1

// datapath turns each queued packet into a decision, logs it, records it for policygen when asked, and
// answers the kernel with NF_REPEAT and a verdict mark: the ruleset's mark rules, placed before its
// queue rules, then reject or accept the packet in the kernel (see sidecar/ruleset).
type datapath struct {
	decider atomic.Pointer[decide.Decider]
	log     func(decide.Conn, decide.Decision)
	reports *report.Aggregator
	// names are the names the pod resolved addresses from (the DNS queue fills it): an egress
	// connection is judged with its remote's names, which FQDN rules match.
	names *dnsobs.Cache
	// seen are the egress keys allowed to resolved addresses, to forget when their names expire.
	seen seenKeys
	// verdicts are podwall_verdicts_total's series by direction and verdict, resolved once so that the
	// verdict path does no label lookup.
	verdicts [4][4]prometheus.Counter
	badPkts  prometheus.Counter
	// syncNames, when DNS answers are read from the netlink log (not held in a queue), hands on the
	// answers the log holds before an egress connection is judged: an answer the app has read was
	// logged before the app could connect, so the names it gave are in the cache by then.
	syncNames func()
	// lost counts verdict lines of allowed connections whose copies the kernel could not hand on.
	lost func(n uint64)
}

// handle is the nfq.Handler.
func (d *datapath) handle(p nfq.Packet) nfq.Reply {
	dec := d.decider.Load()
	pkt, err := packet.Parse(p.Payload)
	if err != nil || !(packet.HasPorts(pkt.Proto) || packet.IsICMP(pkt.Proto)) {
		// The protocols a policy can name are judged; anything else here is malformed, or a protocol
		// no rule could allow. It gets the fail-safe answer, a drop, which costs a legitimate peer
		// nothing it could have used.
		d.badPkts.Inc()
		return nfq.Reply{Action: nfqueue.NfDrop}
	}
	if v := d.judge(dec, d.conn(pkt, p.InDev, p.OutDev, p.Mark), time.Now()); v.Verdict == policy.Deny {
		return nfq.Reply{Action: nfqueue.NfRepeat, Mark: ruleset.MarkDeny}
	}
	return nfq.Reply{Action: nfqueue.NfRepeat, Mark: ruleset.MarkAllow}
}

// accepted is the nflog.Handler of the connections the kernel accepted from the allow sets
// (ruleset.Options.AllowLog): they are judged to be logged and recorded as queued ones are, and allowed
// whatever the decider says, since the kernel has let them through already.
func (d *datapath) accepted(p nflog.Packet) {
	if p.Lost > 0 {
		d.lost(uint64(p.Lost))
	}
	pkt, err := packet.Parse(p.Payload)
	if err != nil || !packet.HasPorts(pkt.Proto) {
		d.badPkts.Inc()
		return
	}
	c := d.conn(pkt, p.InDev, p.OutDev, p.Mark)
	v := d.decideConn(d.decider.Load(), &c, time.Now(), true)
	d.log(c, v)
}

// judge decides c under dec and logs the decision (see decideConn).
func (d *datapath) judge(dec *decide.Decider, c decide.Conn, now time.Time) decide.Decision {
	v := d.decideConn(dec, &c, now, false)
	d.log(c, v)
	return v
}

// decideConn decides c under dec, with, for egress, the names its remote was resolved from (which it
// sets in c); counts and records the decision; and keeps an allowed key to a resolved address for
// forgetting when the address's names expire. A connection the kernel has accepted (accepted) is
// allowed whatever dec says. The caller logs it.
func (d *datapath) decideConn(dec *decide.Decider, c *decide.Conn, now time.Time, accepted bool) decide.Decision {
	if c.Direction == policy.Egress {
		if d.syncNames != nil {
			d.syncNames()
		}
		c.Names = d.names.Names(c.Remote.Addr(), now)
	}
	v := dec.Decide(*c)
	if accepted && v.Verdict != policy.Allow {
		v.Verdict, v.Rule, v.Evaluator = policy.Allow, "", verdict.EvaluatorAllowSet
	}
	d.verdicts[c.Direction][v.Verdict].Inc()
	// Learn records everything; Monitor's audits and Protect's denies are the violations policygen
	// counts.
	if v.Record || v.Verdict != policy.Allow {
		d.reports.Add(report.Key{Direction: c.Direction, Peer: c.Remote.Addr(), Protocol: policy.ProtocolOf(c.Proto),
			Port: recordedPort(*c)}, report.Outcome{Verdict: v.Verdict, Rule: v.Rule, Evaluator: v.Evaluator, Name: v.Name}, now)
	}
	if v.Verdict != policy.Deny && len(c.Names) > 0 {
		d.seen.add(ruleset.SeenKey{Addr: c.Remote.Addr(), Proto: c.Proto, Port: c.Remote.Port()})
	}
	return v
}

// conn describes the connection a queued packet opens. The hook tells the direction: the ruleset
// queues egress at output (an out-device set) and ingress and loopback at input. Egress is queued
// before NAT, so an app→proxy connection that a mesh proxy's REDIRECT will send to the proxy arrives
// here with its real remote as destination, and is judged and logged against it.
func (d *datapath) conn(pkt packet.Packet, inDev, outDev, mark uint32) decide.Conn {
	c := decide.Conn{Proto: pkt.Proto, ICMPType: pkt.ICMPType}
	switch {
	case outDev != 0:
		c.Direction, c.Local, c.Remote = policy.Egress, pkt.Src, pkt.Dst
	case inDev == loIndex:
		c.Direction, c.Local, c.Remote = policy.Loopback, pkt.Src, pkt.Dst
	default:
		c.Direction, c.Local, c.Remote = policy.Ingress, pkt.Dst, pkt.Src
		// The ruleset copies the connection's original destination port into the mark's low bits
		// before queueing an inbound packet (its conntrack entry cannot be looked up yet). An ICMP
		// entry's "port" there is its type and code, which mean no redirect.
		if port := uint16(mark & 0xffff); port != 0 && packet.HasPorts(pkt.Proto) {
			c.Original = netip.AddrPortFrom(pkt.Dst.Addr(), port)
		}
	}
	return c
}

// recordedPort is the port a learned rule allows: the pod's port for ingress, the remote's otherwise,
// and 0 for ICMP, whose ends carry none (a learned ICMP rule allows every type).
func recordedPort(c decide.Conn) uint16 {
	if c.Original.IsValid() {
		return c.Original.Port()
	}
	if c.Direction == policy.Ingress {
		return c.Local.Port()
	}
	return c.Remote.Port()
}

// modeOf returns the mode a policy runs in: a configured mode is a floor, so the strictest of the
// policy's and the configured one.
func modeOf(p *policy.Policy, configured policy.Mode) policy.Mode {
	return policy.Strictest(p.Mode, configured)
}
