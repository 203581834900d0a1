package ruleset

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"podwall.io/podwall/sidecar/policy"
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
	lo, hi netip.Addr
	span
}

// allProtocols is what a rule without ports allows: the whole port range of each protocol a rule may
// name. Other protocols (ICMP) have no ports to match and are left to the queue.
var allProtocols = []policy.PortRange{{Protocol: policy.TCP}, {Protocol: policy.UDP}, {Protocol: policy.SCTP}}

// ruleBoxes expands rules into boxes, IPv4 and IPv6 apart: every CIDR times every port range.
func ruleBoxes(rules []policy.Rule) (v4, v6 []box) {
	for _, r := range rules {
		ports := r.Ports
		if len(ports) == 0 {
			ports = allProtocols
		}
		for _, c := range r.CIDRs {
			lo, hi := prefixRange(c)
			for _, pr := range ports {
				plo, phi := pr.Bounds()
				b := box{lo: lo, hi: hi, span: span{pr.Protocol.Number(), plo, phi}}
				if lo.Is4() {
					v4 = append(v4, b)
				} else {
					v6 = append(v6, b)
				}
			}
		}
	}
	return v4, v6
}

// prefixRange returns the first and last address of a prefix.
func prefixRange(p netip.Prefix) (netip.Addr, netip.Addr) {
	p = p.Masked()
	a := p.Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	hi, _ := netip.AddrFromSlice(a)
	return p.Addr(), hi
}

// disjoint rewrites boxes as an equal union of boxes that do not overlap. The kernel's set for
// concatenated ranges (pipapo) refuses an element that overlaps one already in the set, so two rules
// that allow the same peer and port (a /24 and one of its addresses, say) must become disjoint
// elements. It sweeps the address axis: between two consecutive range boundaries the same port spans
// apply, merged per protocol; neighbouring address stretches with the same spans become one element.
// Peers are the large dimension of a policy and port spans the small one, so the result stays close
// to the input in size. work bounds the effort (address stretches times spans) so that a pathological
// policy fails with an error instead of stalling the sidecar.
func disjoint(boxes []box, work int) ([]box, error) {
	type event struct {
		at  netip.Addr
		add bool
		span
	}
	events := make([]event, 0, 2*len(boxes))
	for _, b := range boxes {
		events = append(events, event{b.lo, true, b.span})
		if next := b.hi.Next(); next.IsValid() { // no end event past the last address
			events = append(events, event{next, false, b.span})
		}
	}
	slices.SortFunc(events, func(a, b event) int { return a.at.Compare(b.at) })

	var out []box
	active := map[span]int{}
	var cur []span // merged spans of the stretch being built
	var start netip.Addr
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
		out = appendStretch(out, start, at.Prev(), cur)
		cur, start = next, at
	}
	if len(cur) > 0 { // a box reaches the family's last address
		out = appendStretch(out, start, maxAddr(start), cur)
	}
	return out, nil
}

// appendStretch appends one box per span for the addresses lo..hi.
func appendStretch(out []box, lo, hi netip.Addr, spans []span) []box {
	for _, s := range spans {
		out = append(out, box{lo: lo, hi: hi, span: s})
	}
	return out
}

// maxAddr is the last address of a's family.
func maxAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
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
		if r.Action != policy.Deny {
			continue
		}
		for _, pr := range r.Ports {
			lo, hi := pr.Bounds()
			active[span{pr.Protocol.Number(), lo, hi}]++
		}
	}
	return mergeSpans(active)
}
