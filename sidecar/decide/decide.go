package decide

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"podwall.io/podwall/api/policy"
)

// Conn describes a new connection.
type Conn struct {
	Direction policy.Direction
	// Proto is the IANA protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, ...).
	Proto uint8
	// ICMPType is the message type of an ICMP or ICMPv6 flow (8 or 128: echo request), whose ends
	// carry port 0. Rules naming ICMP match it where they match the port of other protocols.
	ICMPType uint8
	// Local is the pod's end and Remote the peer's. For a Loopback connection both are in the pod:
	// Local is the side that connects and Remote the port it connects to.
	Local, Remote netip.AddrPort
	// Original is, for a connection a mesh proxy's REDIRECT rewrote, the destination it had before:
	// for an app→proxy loopback connection the real remote, for an inbound connection the pod port
	// the peer asked for. The zero value means unknown. A connection that no NAT touched may carry
	// its own destination here; it is then judged as it is.
	Original netip.AddrPort
	// Names are, for egress, the names the pod resolved Remote's address from, most recent first, as
	// DNS answers it received gave them (the sidecar judges egress before NAT, so Remote is the real
	// remote even of a connection a mesh proxy redirects). FQDN rules
	// (Rule.Names) match a connection when one of their patterns matches one of these names and
	// their ports match: an address that an allowed and a denied name share is allowed only for the
	// allowed name's rule's ports.
	Names []string
}

// Src returns the endpoint that opened the connection.
func (c Conn) Src() netip.AddrPort {
	if c.Direction == policy.Ingress {
		return c.Remote
	}
	return c.Local
}

// Dst returns the endpoint the connection was opened to, as the packet shows it (after any redirect).
func (c Conn) Dst() netip.AddrPort {
	if c.Direction == policy.Ingress {
		return c.Local
	}
	return c.Remote
}

// Decision is the outcome of Decide, with everything a verdict line needs to explain it.
type Decision struct {
	Verdict policy.Verdict
	// Rule is the id of the rule that decided, "default" when the mode's default did,
	// "loopback-default" for loopback traffic no loopback rule names, or "search-domain" for a DNS
	// query for a name under one of the pod's search domains (DecideQuery).
	Rule string
	// Evaluator names the pipeline step that decided (see the package documentation).
	Evaluator string
	// Peer names the remote that was judged: the deciding rule's peer, else the policy's name for the
	// address, else "cidr:<ip>/32" (or /128). For a redirected connection it is the original
	// destination's peer. For a DNS query (DecideQuery) it names the resolver.
	Peer string
	// Name is, for egress, the DNS name of the destination: the one the deciding FQDN rule's pattern
	// matched, else the first of Conn.Names, else empty. For a DNS query it is the name asked for.
	Name string
	// Record asks the caller to report the connection to policygen (Learn mode).
	Record bool
	// Redirected says the connection went to a mesh redirect port and was judged against
	// Conn.Original, which the verdict line then shows.
	Redirected bool
	// Mode and Revision are those of the policy the Decider was built from (after Options.Mode), so
	// that a verdict line names the revision that decided even while a new one is being swapped in;
	// Canary is that policy's Canary (the pod is one of its workload's canaries).
	Mode     policy.Mode
	Revision int64
	Canary   bool
}

// Options tune a Decider. The zero value is ready to use.
type Options struct {
	// Mode, when set, is the mode to run in instead of the policy's (the agent passes the strictest of
	// the policy's and the configured floor).
	Mode policy.Mode
	// MeshPorts are the local ports a mesh proxy redirects connections to, outbound and inbound alike
	// (Envoy 15001 and 15006, Linkerd 4140 and 4143); none means no mesh. Only redirect targets belong
	// here, not ports the proxy merely listens on: its admin port is an ordinary loopback port.
	// Connections to these ports are judged against Conn.Original, so the caller must fill it in for
	// them (with the destination itself when conntrack shows no NAT).
	MeshPorts []uint16
	// SearchDomains are the pod's resolv.conf search domains (canonical, policy.CanonicalName): where
	// the policy restricts DNS, queries for names at or under them are allowed (the cluster's names).
	SearchDomains []string
}

// Decider decides connections under one policy revision. It is immutable and safe for concurrent use.
type Decider struct {
	// policyMode is the policy's own mode, mode the one decided in (after Options.Mode).
	policyMode, mode policy.Mode
	revision         int64
	canary           bool
	meshPorts        []uint16
	// restrictDNS and searchDomains judge DNS queries (DecideQuery).
	restrictDNS   bool
	searchDomains []string
	ingress       *ruleSet
	egress        *ruleSet
	loopback      *loopbackSet
	names         map[netip.Addr]string
}

// New indexes p for Decide. The Decider shares p's loopback rules, names map and rules' name patterns,
// so p must not change afterwards (a new revision is a new Policy).
func New(p *policy.Policy, opts Options) (*Decider, error) {
	if p == nil {
		return nil, errors.New("no policy")
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	var b Builder
	_ = p.EachRule(b.Add) // Add never fails
	return b.Build(p, opts)
}

// Builder indexes a policy's rules one at a time, as policy.Stream hands them over, so that no one
// holds them all: a Decider keeps of each rule only what a verdict line names (its id and peer) and,
// for rules with DNS name patterns, the patterns. The zero Builder is ready to use; it builds one
// Decider.
type Builder struct {
	sets [policy.Egress]ruleSetBuilder
}

// Add indexes r, the next rule of direction dir (policy.Ingress or policy.Egress) in policy order,
// which the caller has validated (policy.Stream does). It never fails: it fits policy.Stream's rule
// func.
func (b *Builder) Add(dir policy.Direction, r policy.Rule) error {
	b.sets[dir-1].add(r)
	return nil
}

// Build returns the Decider of the rules added and of the rest of p (valid, its own rules ignored:
// policy.Stream returns it without them), under opts. It shares p's loopback rules and names map.
func (b *Builder) Build(p *policy.Policy, opts Options) (*Decider, error) {
	d := &Decider{
		policyMode:  p.Mode,
		revision:    p.Revision,
		canary:      p.Canary,
		restrictDNS: p.RestrictDNS,
		ingress:     b.sets[policy.Ingress-1].done(),
		egress:      b.sets[policy.Egress-1].done(),
		loopback:    newLoopbackSet(p.Loopback),
		names:       p.Names,
	}
	return d.With(opts)
}

// With returns a Decider of the same policy under opts instead: another mode override, mesh or search
// domains. It shares d's indexes, so it costs no more than the options.
func (d *Decider) With(opts Options) (*Decider, error) {
	mode := d.policyMode
	switch opts.Mode {
	case "":
	case policy.Learn, policy.Monitor, policy.Protect:
		mode = opts.Mode
	default:
		return nil, fmt.Errorf("mode override %q: want Learn, Monitor or Protect", opts.Mode)
	}
	for _, port := range opts.MeshPorts {
		if port == 0 {
			return nil, errors.New("mesh port 0")
		}
	}
	c := *d
	c.mode = mode
	c.meshPorts = slices.Clone(opts.MeshPorts)
	c.searchDomains = slices.Clone(opts.SearchDomains)
	return &c, nil
}

// Decide decides c. It allocates only to name a peer the policy does not name.
func (d *Decider) Decide(c Conn) Decision {
	s := d.subject(&c)
	for _, e := range pipeline {
		if o := e.eval(d, s); o.verdict != 0 {
			return d.finish(o, e.name, &s)
		}
	}
	return d.finish(outcome{verdict: policy.Deny, rule: "default"}, "default", &s)
}

// DecideQuery judges a DNS query for name (canonical) that the pod sends on connection c, the query's
// flow to its resolver (egress). Where the policy does not restrict DNS (Policy.RestrictDNS), a query
// is judged as its flow: the decision is Decide's for c (the rule that allows the resolver, say), with
// Name set to name, so that the query's line says which rule let it out. Where it does, only names at
// or under a search domain (Rule "search-domain") and names an egress rule's pattern matches (Rule: the
// first such rule, in policy order) are allowed, whatever the rule's ports: the query only asks where
// the name is, the connection after it is judged on its own. The rest is denied with Rule "default",
// then the mode applies as for connections (Monitor: Audit; Learn: Allow, recorded); the evaluator of
// these is "dns-query". It allocates only to name a resolver the policy does not name.
func (d *Decider) DecideQuery(c Conn, name string) Decision {
	if !d.restrictDNS {
		dec := d.Decide(c)
		dec.Name = name
		return dec
	}
	o := outcome{verdict: policy.Deny, rule: "default"}
	switch {
	case underAny(name, d.searchDomains):
		o = outcome{verdict: policy.Allow, rule: "search-domain"}
	default:
		if r := d.egress.nameRule(name); r >= 0 {
			o = outcome{verdict: policy.Allow, rule: d.egress.id(r)}
		}
	}
	return d.finish(o, "dns-query", &subject{peer: c.Remote.Addr(), name: name})
}

// underAny says whether name is one of domains or under one.
func underAny(name string, domains []string) bool {
	for _, dom := range domains {
		if rest, ok := strings.CutSuffix(name, dom); ok && (rest == "" || strings.HasSuffix(rest, ".")) {
			return true
		}
	}
	return false
}

// finish names the peer and applies the mode to a Protect outcome.
func (d *Decider) finish(o outcome, evaluator string, s *subject) Decision {
	dec := Decision{Verdict: o.verdict, Rule: o.rule, Evaluator: evaluator, Peer: o.peer, Name: o.name,
		Redirected: s.redirected, Mode: d.mode, Revision: d.revision, Canary: d.canary}
	if dec.Peer == "" {
		dec.Peer = d.peerName(s.peer)
	}
	if dec.Name == "" {
		dec.Name = s.name
	}
	switch d.mode {
	case policy.Monitor:
		if dec.Verdict == policy.Deny {
			dec.Verdict = policy.Audit
		}
	case policy.Learn:
		dec.Verdict, dec.Record = policy.Allow, true
	}
	return dec
}

func (d *Decider) peerName(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	if n, ok := d.names[a]; ok {
		return n
	}
	var buf [64]byte
	b := append(buf[:0], "cidr:"...)
	b = a.AppendTo(b)
	if a.Is4() {
		b = append(b, "/32"...)
	} else {
		b = append(b, "/128"...)
	}
	return string(b)
}
