package decide

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"podwall.io/podwall/api/policy"
)

// naiveLookup is the definition the index must agree with: the first rule, in policy order, one of whose
// prefixes contains addr and one of whose port ranges contains proto and port.
func naiveLookup(rules []policy.Rule, proto uint8, port uint16, addr netip.Addr) int32 {
	for i, r := range rules {
		if !portsMatch(r.Ports, proto, port) {
			continue
		}
		for _, p := range r.CIDRs {
			if p.Contains(addr) {
				return int32(i)
			}
		}
	}
	return -1
}

func portsMatch(ports []policy.PortRange, proto uint8, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pr := range ports {
		lo, hi := pr.Bounds()
		if pr.Protocol.Number() == proto && lo <= port && port <= hi {
			return true
		}
	}
	return false
}

// TestRuleSetMatchesNaive compares the index with naiveLookup on random policies whose prefixes,
// ports and protocols overlap on purpose, over addresses near the prefixes.
func TestRuleSetMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	protos := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}
	for round := range 200 {
		var rules []policy.Rule
		for i := range 1 + rng.IntN(30) {
			r := policy.Rule{ID: fmt.Sprint(i)}
			for range rng.IntN(3) {
				r.CIDRs = append(r.CIDRs, randPrefix(rng))
			}
			for range rng.IntN(3) {
				pr := policy.PortRange{Protocol: protos[rng.IntN(3)]}
				switch rng.IntN(3) {
				case 0:
					pr.Port = uint16(1 + rng.IntN(8))
				case 1:
					pr.Port = uint16(1 + rng.IntN(8))
					pr.EndPort = pr.Port + uint16(rng.IntN(4))
				}
				r.Ports = append(r.Ports, pr)
			}
			rules = append(rules, r)
		}
		set := newRuleSet(rules)
		for range 200 {
			addr := randPrefix(rng).Addr()
			if rng.IntN(2) == 0 { // somewhere inside a /24 or /120 of a rule's prefix
				b := addr.AsSlice()
				b[len(b)-1] = byte(rng.IntN(256))
				addr, _ = netip.AddrFromSlice(b)
			}
			proto, port := protos[rng.IntN(3)].Number(), uint16(rng.IntN(12))
			if rng.IntN(10) == 0 {
				proto = 1
			}
			got, _ := set.lookup(proto, port, addr, nil)
			if want := naiveLookup(rules, proto, port, addr); got != want {
				t.Fatalf("round %d: lookup(%d, %d, %s) = %d, want %d; rules %+v", round, proto, port, addr, got, want, rules)
			}
		}
	}
}

// randPrefix returns a masked prefix from a small space, so that random prefixes nest and collide.
func randPrefix(rng *rand.Rand) netip.Prefix {
	if rng.IntN(2) == 0 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(2)), byte(rng.IntN(4))})
		return netip.PrefixFrom(a, []int{0, 8, 16, 23, 24, 31, 32}[rng.IntN(7)]).Masked()
	}
	a := netip.AddrFrom16([16]byte{0xfd, 14: byte(rng.IntN(2)), 15: byte(rng.IntN(4))})
	return netip.PrefixFrom(a, []int{0, 8, 64, 119, 120, 127, 128}[rng.IntN(7)]).Masked()
}

func TestLoopbackFirstMatch(t *testing.T) {
	set := newLoopbackSet([]policy.LoopbackRule{
		{ID: "wide", Action: policy.ActionAllow, Ports: []policy.PortRange{{Protocol: policy.TCP}}},
		{ID: "narrow", Action: policy.ActionAllow, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80}}},
		{ID: "udp", Action: policy.ActionDeny, Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53, EndPort: 60}}},
	})
	for _, tc := range []struct {
		idx   *portIndex[int32]
		proto uint8
		port  uint16
		want  int32
	}{
		{&set.allow, 6, 80, 0}, // the earlier, wider rule wins
		{&set.allow, 6, 81, 0},
		{&set.allow, 17, 80, -1},
		{&set.deny, 17, 55, 2},
		{&set.deny, 17, 61, -1},
	} {
		if got := first(tc.idx, tc.proto, tc.port); got != tc.want {
			t.Errorf("first(%d, %d) = %d, want %d", tc.proto, tc.port, got, tc.want)
		}
	}
}
