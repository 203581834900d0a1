package decide

import (
	"net/netip"
	"slices"

	"podwall.io/podwall/api/policy"
)

// subject is the connection as the rules see it: after a mesh redirect, the destination behind it.
type subject struct {
	// dir picks the rules that judge: an app→proxy connection to a remote is judged as Egress.
	dir   policy.Direction
	proto uint8
	// peer is the remote whose prefixes and name count; port is the port the rules match, or for ICMP
	// and ICMPv6 the message type.
	peer netip.Addr
	port uint16
	// origUnknown marks a connection to a mesh redirect port whose original destination is unknown;
	// redirected, one that is judged against its original destination.
	origUnknown, redirected bool
	// names are the peer's DNS names (Conn.Names), for egress; name is the first of them, the
	// Decision's Name when no FQDN rule decides.
	names []string
	name  string
}

// subject resolves the mesh redirect, if any, of c.
func (d *Decider) subject(c *Conn) subject {
	s := d.redirect(c)
	if s.dir == policy.Egress && len(c.Names) > 0 {
		s.names, s.name = c.Names, c.Names[0]
	}
	return s
}

// redirect resolves the mesh redirect, if any, of c.
func (d *Decider) redirect(c *Conn) subject {
	s := subject{dir: c.Direction, proto: c.Proto, peer: c.Remote.Addr(), port: c.Dst().Port()}
	if policy.ProtocolOf(c.Proto).IsICMP() {
		s.port = uint16(c.ICMPType)
		return s
	}
	if c.Direction != policy.Loopback && c.Direction != policy.Ingress {
		return s
	}
	dst := c.Dst()
	if !slices.Contains(d.meshPorts, dst.Port()) || c.Original == dst {
		return s
	}
	if !c.Original.IsValid() {
		s.origUnknown = true
		return s
	}
	s.port, s.redirected = c.Original.Port(), true
	if c.Direction == policy.Loopback {
		s.peer = c.Original.Addr()
		// A connection whose real destination is the pod itself (the proxy's hairpin through its
		// inbound port, to the pod's own address) stays loopback traffic; the rest went out.
		if !s.peer.IsLoopback() && s.peer != c.Local.Addr() {
			s.dir = policy.Egress
		}
	}
	return s
}

// outcome is an evaluator's answer: verdict 0 passes the connection on to the next evaluator.
type outcome struct {
	verdict policy.Verdict
	rule    string
	// peer is the deciding rule's peer name; empty leaves naming to the policy's names.
	peer string
	// name is the name the deciding FQDN rule's pattern matched; empty leaves it to the subject's.
	name string
}

var next = outcome{}

// evaluator is one named step of the pipeline.
type evaluator struct {
	name string
	eval func(d *Decider, s subject) outcome
}

// pipeline is the Protect pipeline, in order; Decide ends it with the mode's default.
var pipeline = []evaluator{
	{"invalid-conn", invalidConn},
	{"origdst-unknown", origdstUnknown},
	{"loopback", loopbackRules},
	{"ingress", func(d *Decider, s subject) outcome { return rules(d.ingress, policy.Ingress, s) }},
	{"egress", func(d *Decider, s subject) outcome { return rules(d.egress, policy.Egress, s) }},
}

// invalidConn denies what cannot be judged: it is a caller's bug, and failing closed shows it.
func invalidConn(_ *Decider, s subject) outcome {
	if s.dir == 0 || s.dir > policy.Loopback || !s.peer.IsValid() {
		return outcome{verdict: policy.Deny, rule: "default"}
	}
	return next
}

// origdstUnknown fails closed on a redirected connection whose real destination is unknown: the proxy
// would carry it to a peer no rule was checked against.
func origdstUnknown(_ *Decider, s subject) outcome {
	if s.origUnknown {
		return outcome{verdict: policy.Deny, rule: "default"}
	}
	return next
}

// loopbackRules decides every loopback connection left: deny rule, else allow rule, else allow.
func loopbackRules(d *Decider, s subject) outcome {
	if s.dir != policy.Loopback {
		return next
	}
	if r := first(&d.loopback.deny, s.proto, s.port); r >= 0 {
		return outcome{verdict: policy.Deny, rule: d.loopback.rules[r].ID}
	}
	if r := first(&d.loopback.allow, s.proto, s.port); r >= 0 {
		return outcome{verdict: policy.Allow, rule: d.loopback.rules[r].ID}
	}
	return outcome{verdict: policy.Allow, rule: "loopback-default"}
}

// rules allows a connection of direction dir that one of set's rules allows.
func rules(set *ruleSet, dir policy.Direction, s subject) outcome {
	if s.dir != dir {
		return next
	}
	r, name := set.lookup(s.proto, s.port, s.peer, s.names)
	if r >= 0 {
		return outcome{verdict: policy.Allow, rule: set.id(r), peer: set.peer(r), name: name}
	}
	return next
}
