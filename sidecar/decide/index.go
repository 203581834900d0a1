package decide

import (
	"net/netip"
	"slices"
	"strings"

	"podwall.io/podwall/api/policy"
)

// portKey names a protocol's port range; proto 0 stands for every protocol (a rule without ports).
type portKey struct {
	proto  uint8
	lo, hi uint16
}

func (k portKey) contains(proto uint8, port uint16) bool {
	return (k.proto == 0 || k.proto == proto) && k.lo <= port && port <= k.hi
}

// portKeys returns the keys a rule's port list stands for; no ports means every port of every protocol
// (ICMP types included). An ICMP entry's types are its ports, each a key of its own; no types means
// every type.
func portKeys(ports []policy.PortRange) []portKey {
	if len(ports) == 0 {
		return []portKey{{0, 0, 65535}}
	}
	keys := make([]portKey, 0, len(ports))
	for _, pr := range ports {
		proto := pr.Protocol.Number()
		for _, t := range pr.Types {
			keys = append(keys, portKey{proto, t, t})
		}
		if len(pr.Types) == 0 {
			lo, hi := pr.Bounds()
			keys = append(keys, portKey{proto, lo, hi})
		}
	}
	return keys
}

// portIndex maps port keys to values. Single ports, by far the most common, live in a map; ranges
// (including "every port") in a list that policies keep short, since ranges are few and shared.
type portIndex[V any] struct {
	exact  map[portKey]V
	ranges []rangeEntry[V]
}

type rangeEntry[V any] struct {
	key portKey
	val V
}

// at returns the value stored under k, storing mk() first if there is none. It is for building only.
func (x *portIndex[V]) at(k portKey, mk func() V) V {
	if k.lo == k.hi && k.proto != 0 {
		if v, ok := x.exact[k]; ok {
			return v
		}
		if x.exact == nil {
			x.exact = map[portKey]V{}
		}
		v := mk()
		x.exact[k] = v
		return v
	}
	for _, e := range x.ranges {
		if e.key == k {
			return e.val
		}
	}
	v := mk()
	x.ranges = append(x.ranges, rangeEntry[V]{k, v})
	return v
}

// single returns the value stored under proto's single port, if any; callers then scan the ranges.
// (An iterator over both would be neater, but its closure escapes and costs an allocation per call.)
func (x *portIndex[V]) single(proto uint8, port uint16) (V, bool) {
	v, ok := x.exact[portKey{proto, port, port}]
	return v, ok
}

// minRule returns the lower of two rule indexes, where -1 means none.
func minRule(a, b int32) int32 {
	if a < 0 || (b >= 0 && b < a) {
		return b
	}
	return a
}

// v6Key is a masked IPv6 prefix. It is a plain array rather than a netip.Prefix: half the size in a
// map that may hold every peer of a large policy, and cheaper to hash.
type v6Key struct {
	addr [16]byte
	bits uint8
}

// prefixTable maps the prefixes under one port key to the first rule (lowest index) naming them. A
// lookup probes once per distinct prefix length of the address's family.
type prefixTable struct {
	lens4, lens6 []uint8
	v4           map[uint64]int32 // address << 8 | prefix length
	v6           map[v6Key]int32
}

func newPrefixTable() *prefixTable {
	return &prefixTable{v4: map[uint64]int32{}, v6: map[v6Key]int32{}}
}

func v4Key(a netip.Addr, bits uint8) uint64 {
	b := a.As4()
	return uint64(b[0])<<32 | uint64(b[1])<<24 | uint64(b[2])<<16 | uint64(b[3])<<8 | uint64(bits)
}

// add records that rule names prefix p (which Policy.Validate has checked is masked); an earlier rule
// naming the same prefix keeps it.
func (t *prefixTable) add(p netip.Prefix, rule int32) {
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		if _, ok := t.v4[v4Key(p.Addr(), bits)]; !ok {
			t.v4[v4Key(p.Addr(), bits)] = rule
		}
		t.lens4 = addLen(t.lens4, bits)
		return
	}
	k := v6Key{p.Addr().As16(), bits}
	if _, ok := t.v6[k]; !ok {
		t.v6[k] = rule
	}
	t.lens6 = addLen(t.lens6, bits)
}

func addLen(lens []uint8, bits uint8) []uint8 {
	if slices.Contains(lens, bits) {
		return lens
	}
	return append(lens, bits)
}

// lookup returns the lowest rule index whose prefix contains a, or -1.
func (t *prefixTable) lookup(a netip.Addr) int32 {
	best := int32(-1)
	if a.Is4() {
		for _, bits := range t.lens4 {
			p, _ := a.Prefix(int(bits))
			if r, ok := t.v4[v4Key(p.Addr(), bits)]; ok {
				best = minRule(best, r)
			}
		}
		return best
	}
	for _, bits := range t.lens6 {
		p, _ := a.Prefix(int(bits))
		if r, ok := t.v6[v6Key{p.Addr().As16(), bits}]; ok {
			best = minRule(best, r)
		}
	}
	return best
}

// ruleSet indexes one direction's rules (ingress or egress) by port, then prefix, and keeps the few
// rules with DNS name patterns in a list of their own.
type ruleSet struct {
	byPort portIndex[*prefixTable]
	// fqdn are the rules with Names, in policy order. Policies have few (each names at most
	// policy.MaxRuleNames patterns), so a scan costs less than an index would.
	fqdn []fqdnRule
	// text holds each rule's id then its peer, end to end, and ends where each ends: rule i's id is
	// text[ends[2i-1]:ends[2i]] (from 0 for the first) and its peer text[ends[2i]:ends[2i+1]]. One
	// string for them all: 100k rules' ids and peers as strings of their own would cost twice as much.
	text string
	ends []uint32
}

// ruleSetBuilder builds a ruleSet one rule at a time.
type ruleSetBuilder struct {
	set  ruleSet
	text strings.Builder
}

// fqdnRule is a rule with DNS name patterns: its index in the policy, its port keys and patterns.
type fqdnRule struct {
	index    int32
	keys     []portKey
	patterns []string
}

// match returns the first of names that one of the rule's patterns matches, if the rule allows proto
// and port.
func (r *fqdnRule) match(proto uint8, port uint16, names []string) (string, bool) {
	for _, k := range r.keys {
		if k.contains(proto, port) {
			return policy.MatchAny(r.patterns, names)
		}
	}
	return "", false
}

func newRuleSet(rules []policy.Rule) *ruleSet {
	var b ruleSetBuilder
	for _, r := range rules {
		b.add(r)
	}
	return b.done()
}

// add indexes r, the set's next rule.
func (b *ruleSetBuilder) add(r policy.Rule) {
	s := &b.set
	i := int32(len(s.ends) / 2)
	keys := portKeys(r.Ports)
	if len(r.Names) > 0 {
		s.fqdn = append(s.fqdn, fqdnRule{index: i, keys: keys, patterns: r.Names})
	}
	for _, k := range keys {
		t := s.byPort.at(k, newPrefixTable)
		for _, p := range r.CIDRs {
			t.add(p, i)
		}
	}
	b.text.WriteString(r.ID)
	s.ends = append(s.ends, uint32(b.text.Len()))
	b.text.WriteString(r.Peer)
	s.ends = append(s.ends, uint32(b.text.Len()))
}

// done returns the set built, and resets b.
func (b *ruleSetBuilder) done() *ruleSet {
	s := b.set
	s.text, s.ends = b.text.String(), slices.Clip(s.ends)
	b.set = ruleSet{}
	b.text.Reset()
	return &s
}

// id is rule i's id.
func (s *ruleSet) id(i int32) string {
	start := uint32(0)
	if i > 0 {
		start = s.ends[2*i-1]
	}
	return s.text[start:s.ends[2*i]]
}

// peer is rule i's peer.
func (s *ruleSet) peer(i int32) string { return s.text[s.ends[2*i]:s.ends[2*i+1]] }

// lookup returns the index of the first rule that allows addr, of DNS names names, on proto and port,
// or -1; and, if that rule allows it by a name pattern, the name the pattern matched.
func (s *ruleSet) lookup(proto uint8, port uint16, addr netip.Addr, names []string) (int32, string) {
	best := int32(-1)
	if t, ok := s.byPort.single(proto, port); ok {
		best = t.lookup(addr)
	}
	for _, e := range s.byPort.ranges {
		if e.key.contains(proto, port) {
			best = minRule(best, e.val.lookup(addr))
		}
	}
	if len(names) == 0 {
		return best, ""
	}
	for i := range s.fqdn {
		r := &s.fqdn[i]
		if best >= 0 && best < r.index {
			break // a rule earlier in policy order allows it by address
		}
		if n, ok := r.match(proto, port, names); ok {
			return r.index, n
		}
	}
	return best, ""
}

// nameRule returns the index of the first rule with a pattern matching name, whatever its ports, or -1.
func (s *ruleSet) nameRule(name string) int32 {
	for i := range s.fqdn {
		if _, ok := policy.MatchAny(s.fqdn[i].patterns, []string{name}); ok {
			return s.fqdn[i].index
		}
	}
	return -1
}

// loopbackSet indexes the loopback rules, deny and allow apart, by port.
type loopbackSet struct {
	deny, allow portIndex[int32]
	rules       []policy.LoopbackRule
}

func newLoopbackSet(rules []policy.LoopbackRule) *loopbackSet {
	s := &loopbackSet{rules: rules}
	for i, r := range rules {
		idx := &s.allow
		if r.Action == policy.ActionDeny {
			idx = &s.deny
		}
		for _, k := range portKeys(r.Ports) {
			idx.at(k, func() int32 { return int32(i) })
		}
	}
	return s
}

// first returns the lowest rule index in idx matching proto and port, or -1.
func first(idx *portIndex[int32], proto uint8, port uint16) int32 {
	best := int32(-1)
	if r, ok := idx.single(proto, port); ok {
		best = r
	}
	for _, e := range idx.ranges {
		if e.key.contains(proto, port) {
			best = minRule(best, e.val)
		}
	}
	return best
}
