package ruleset

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"podwall.io/podwall/api/policy"
)

// span is one protocol's range of ports.
type span struct {
	proto  uint8
	lo, hi uint16
}

func compareSpans(a, b span) int {
	return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi))
}

// box is one set element of an allow set: a range of addresses times a span of ports.
type box struct {
	lo, hi addr
	span
}

// allProtocols is what a rule without ports allows: the whole port range of each protocol a rule may
// name. ICMP and ICMPv6 have no ports to match and are left to the queue, even where a rule names them.
var allProtocols = []policy.PortRange{{Protocol: policy.TCP}, {Protocol: policy.UDP}, {Protocol: policy.SCTP}}

// ruleSpans returns the port spans a rule allows in the kernel: its port ranges, or allProtocols for a
// rule without ports. ICMP has no ports to match and is left out: the queue judges its type.
func ruleSpans(ports []policy.PortRange) []span {
	if len(ports) == 0 {
		ports = allProtocols
	}
	spans := make([]span, 0, len(ports))
	for _, pr := range ports {
		if !pr.Protocol.IsICMP() {
			lo, hi := pr.Bounds()
			spans = append(spans, span{pr.Protocol.Number(), lo, hi})
		}
	}
	return spans
}

// ruleBoxes expands rules into boxes, IPv4 and IPv6 apart: every CIDR times every port range.
func ruleBoxes(rules []policy.Rule) (v4, v6 []box) {
	for _, r := range rules {
		spans := ruleSpans(r.Ports)
		for _, c := range r.CIDRs {
			if c.Addr().Is4In6() && c.Bits() >= 96 { // an IPv4 peer written as IPv6: packets carry IPv4
				c = netip.PrefixFrom(c.Addr().Unmap(), c.Bits()-96)
			}
			lo, hi := prefixRange(c)
			for _, s := range spans {
				b := box{lo: lo, hi: hi, span: s}
				if c.Addr().Is4() {
					v4 = append(v4, b)
				} else {
					v6 = append(v6, b)
				}
			}
		}
	}
	return v4, v6
}

// disjoint rewrites boxes as an equal union of boxes that do not overlap. The kernel's set for
// concatenated ranges (pipapo) refuses an element that overlaps one already in the set, so two rules
// that allow the same peer and port (a /24 and one of its addresses, say) must become disjoint
// elements. Between two consecutive address range boundaries the same port spans apply, merged per
// protocol; neighbouring address stretches with the same spans become one element. Peers are the
// large dimension of a policy and port spans the small one, so the result stays close to the input in
// size. work bounds the effort (address stretches times spans) so that a pathological policy fails
// with an error instead of stalling the sidecar.
func disjoint(boxes []box, work int) ([]box, error) {
	if out, ok := disjointRanges(boxes); ok {
		return out, nil
	}
	return sweep(boxes, work)
}

// disjointRanges handles the common case fast: boxes whose address ranges are equal or disjoint
// (distinct peers, each with its ports). Sorted by address, each range's spans are merged on their
// own. It reports false when two different ranges overlap.
func disjointRanges(boxes []box) ([]box, bool) {
	sorted := slices.Clone(boxes)
	slices.SortFunc(sorted, func(a, b box) int {
		return cmp.Or(a.lo.compare(b.lo), a.hi.compare(b.hi), compareSpans(a.span, b.span))
	})
	out := make([]box, 0, len(sorted))
	var prev []box // the previous range's merged boxes
	for i := 0; i < len(sorted); {
		lo, hi := sorted[i].lo, sorted[i].hi
		if i > 0 && !sorted[i-1].hi.less(lo) {
			return nil, false
		}
		start := len(out)
		for ; i < len(sorted) && sorted[i].lo == lo && sorted[i].hi == hi; i++ {
			b := sorted[i]
			if last := len(out) - 1; last >= start && out[last].proto == b.proto && uint32(b.span.lo) <= uint32(out[last].span.hi)+1 {
				out[last].span.hi = max(out[last].span.hi, b.span.hi)
				continue
			}
			out = append(out, b)
		}
		cur := out[start:]
		if len(prev) == len(cur) && adjacent(prev[0].hi, lo) && sameSpans(prev, cur) {
			for k := range prev { // extend the previous range instead
				prev[k].hi = hi
			}
			out = out[:start]
			continue
		}
		prev = cur
	}
	return out, true
}

func adjacent(a, b addr) bool {
	n, ok := a.next()
	return ok && n == b
}

func sameSpans(a, b []box) bool {
	for i := range a {
		if a[i].span != b[i].span {
			return false
		}
	}
	return true
}

// sweep makes any boxes disjoint by sweeping the address axis: at each range boundary the set of
// active spans changes, and the stretch up to the next boundary gets the merged active spans.
func sweep(boxes []box, work int) ([]box, error) {
	type event struct {
		at  addr
		add bool
		span
	}
	events := make([]event, 0, 2*len(boxes))
	for _, b := range boxes {
		events = append(events, event{b.lo, true, b.span})
		if next, ok := b.hi.next(); ok { // no end event past the last address
			events = append(events, event{next, false, b.span})
		}
	}
	slices.SortFunc(events, func(a, b event) int { return a.at.compare(b.at) })

	var out []box
	active := map[span]int{}
	var cur []span // merged spans of the stretch being built
	var start addr
	for i := 0; i < len(events); {
		at := events[i].at
		for ; i < len(events) && events[i].at == at; i++ {
			e := events[i]
			if e.add {
				active[e.span]++
			} else if active[e.span]--; active[e.span] == 0 {
				delete(active, e.span)
			}
		}
		if work -= len(active); work < 0 {
			return nil, fmt.Errorf("policy too large: its peers and ports do not decompose into a bounded number of set elements")
		}
		next := mergeSpans(active)
		if slices.Equal(next, cur) {
			continue
		}
		out = appendStretch(out, start, at.prev(), cur)
		cur, start = next, at
	}
	if len(cur) > 0 { // a box reaches the family's last address
		out = appendStretch(out, start, lastAddr, cur)
	}
	return out, nil
}

// appendStretch appends one box per span for the addresses lo..hi.
func appendStretch(out []box, lo, hi addr, spans []span) []box {
	for _, s := range spans {
		out = append(out, box{lo: lo, hi: hi, span: s})
	}
	return out
}

// mergeSpans returns the union of the active spans as sorted, non-overlapping spans, adjacent ranges
// of one protocol joined.
func mergeSpans(active map[span]int) []span {
	if len(active) == 0 {
		return nil
	}
	all := make([]span, 0, len(active))
	for s := range active {
		all = append(all, s)
	}
	slices.SortFunc(all, compareSpans)
	out := all[:1]
	for _, s := range all[1:] {
		last := &out[len(out)-1]
		if s.proto == last.proto && uint32(s.lo) <= uint32(last.hi)+1 {
			last.hi = max(last.hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return out
}

// loopbackSpans returns the ports the policy's loopback deny rules forbid, merged per protocol. The
// decider lets a deny rule win over an allow rule, so allow rules take nothing away here.
func loopbackSpans(rules []policy.LoopbackRule) []span {
	active := map[span]int{}
	for _, r := range rules {
		if r.Action != policy.ActionDeny {
			continue
		}
		for _, pr := range r.Ports {
			lo, hi := pr.Bounds()
			active[span{pr.Protocol.Number(), lo, hi}]++
		}
	}
	return mergeSpans(active)
}
