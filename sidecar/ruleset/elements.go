package ruleset

import (
	"cmp"
	"fmt"
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

// disjoint rewrites boxes as an equal union of boxes that do not overlap. The kernel's set for
// concatenated ranges (pipapo) refuses an element that overlaps one already in the set, so two rules
// that allow the same peer and port (a /24 and one of its addresses, say) must become disjoint
// elements. Between two consecutive address range boundaries the same port spans apply, merged per
// protocol; neighbouring address stretches with the same spans become one element. Peers are the
// large dimension of a policy and port spans the small one, so the result stays close to the input in
// size. work bounds the effort (address stretches times spans) so that a pathological policy fails
// with an error instead of stalling the sidecar. boxes is reordered, and in the common case its
// memory holds the result.
func disjoint(boxes []box, work int) ([]box, error) {
	if out, ok := disjointRanges(boxes); ok {
		return out, nil
	}
	return sweep(boxes, work)
}

// disjointRanges handles the common case fast: boxes whose address ranges are equal or disjoint
// (distinct peers, each with its ports). Sorted by address, each range's spans are merged on their
// own, in place. It reports false, boxes sorted but otherwise as they were, when two different ranges
// overlap.
func disjointRanges(boxes []box) ([]box, bool) {
	slices.SortFunc(boxes, func(a, b box) int {
		return cmp.Or(a.lo.compare(b.lo), a.hi.compare(b.hi), compareSpans(a.span, b.span))
	})
	for i := 1; i < len(boxes); i++ {
		if (boxes[i].lo != boxes[i-1].lo || boxes[i].hi != boxes[i-1].hi) && !boxes[i-1].hi.less(boxes[i].lo) {
			return boxes, false
		}
	}
	// out is written over boxes, never ahead of the box being read.
	out := boxes[:0]
	prev := -1 // where the previous range's merged boxes start in out
	for i := 0; i < len(boxes); {
		lo, hi := boxes[i].lo, boxes[i].hi
		start := len(out)
		for ; i < len(boxes) && boxes[i].lo == lo && boxes[i].hi == hi; i++ {
			b := boxes[i]
			if last := len(out) - 1; last >= start && out[last].proto == b.proto && uint32(b.span.lo) <= uint32(out[last].span.hi)+1 {
				out[last].span.hi = max(out[last].span.hi, b.span.hi)
				continue
			}
			out = append(out, b)
		}
		cur := out[start:]
		if prev >= 0 && len(out[prev:start]) == len(cur) && adjacent(out[prev].hi, lo) && sameSpans(out[prev:start], cur) {
			for k := prev; k < start; k++ { // extend the previous range instead
				out[k].hi = hi
			}
			out = out[:start]
			continue
		}
		prev = start
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
