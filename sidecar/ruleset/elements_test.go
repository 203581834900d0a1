package ruleset

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

var cmpBoxes = cmp.AllowUnexported(box{}, span{}, addr{})

func bx(lo, hi string, proto uint8, plo, phi uint16) box {
	return box{lo: addrOf(netip.MustParseAddr(lo)), hi: addrOf(netip.MustParseAddr(hi)), span: span{proto, plo, phi}}
}

func TestDisjoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, want []box
	}{
		{"empty", nil, nil},
		{"address inside a prefix, same port",
			[]box{bx("10.0.0.0", "10.0.0.255", 6, 80, 80), bx("10.0.0.7", "10.0.0.7", 6, 80, 80)},
			[]box{bx("10.0.0.0", "10.0.0.255", 6, 80, 80)}},
		{"address inside a prefix, other port",
			[]box{bx("10.0.0.0", "10.0.0.255", 6, 80, 80), bx("10.0.0.7", "10.0.0.7", 6, 443, 443)},
			[]box{bx("10.0.0.0", "10.0.0.6", 6, 80, 80), bx("10.0.0.7", "10.0.0.7", 6, 80, 80),
				bx("10.0.0.7", "10.0.0.7", 6, 443, 443), bx("10.0.0.8", "10.0.0.255", 6, 80, 80)}},
		{"overlapping and adjacent port ranges merge",
			[]box{bx("10.0.0.1", "10.0.0.1", 6, 80, 90), bx("10.0.0.1", "10.0.0.1", 6, 85, 100),
				bx("10.0.0.1", "10.0.0.1", 6, 101, 110), bx("10.0.0.1", "10.0.0.1", 17, 53, 53)},
			[]box{bx("10.0.0.1", "10.0.0.1", 6, 80, 110), bx("10.0.0.1", "10.0.0.1", 17, 53, 53)}},
		{"neighbouring addresses with the same ports merge",
			[]box{bx("10.0.0.1", "10.0.0.1", 6, 80, 80), bx("10.0.0.2", "10.0.0.2", 6, 80, 80)},
			[]box{bx("10.0.0.1", "10.0.0.2", 6, 80, 80)}},
		{"everything",
			[]box{bx("0.0.0.0", "255.255.255.255", 6, 0, 65535), bx("1.2.3.4", "1.2.3.4", 6, 22, 22)},
			[]box{bx("0.0.0.0", "255.255.255.255", 6, 0, 65535)}},
		{"ipv6 to the last address",
			[]box{bx("fd00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 17, 53, 53)},
			[]box{bx("fd00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 17, 53, 53)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := disjoint(tc.in, maxWork)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpBoxes); diff != "" {
				t.Errorf("disjoint (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDisjointRandom checks on random boxes that the result covers exactly what the input covers and
// that no two result boxes overlap (the kernel's pipapo set would refuse them).
func TestDisjointRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func() addr { return addrOf(netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(64))})) }
	port := func() uint16 { return uint16(rng.IntN(40)) }
	for round := range 600 {
		var in []box
		for range 1 + rng.IntN(12) {
			a, b := randAddr(), randAddr()
			if b.less(a) {
				a, b = b, a
			}
			if round%2 == 0 { // single addresses, mostly the fast path
				b = a
			}
			p, q := port(), port()
			in = append(in, box{lo: a, hi: b, span: span{uint8(6 + 11*rng.IntN(2)), min(p, q), max(p, q)}})
		}
		out, err := disjoint(slices.Clone(in), maxWork) // it overwrites its input
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range out {
			for _, y := range out[i+1:] {
				if overlap(x, y) {
					t.Fatalf("%v and %v overlap; input %v", x, y, in)
				}
			}
		}
		for range 200 {
			a, p, proto := randAddr(), port(), uint8(6+11*rng.IntN(2))
			if covered(in, a, proto, p) != covered(out, a, proto, p) {
				t.Fatalf("%v %d/%d: input and result differ; input %v result %v", a, proto, p, in, out)
			}
		}
	}
}

func overlap(x, y box) bool {
	return x.proto == y.proto && !x.hi.less(y.lo) && !y.hi.less(x.lo) && x.span.lo <= y.span.hi && y.span.lo <= x.span.hi
}

func covered(boxes []box, a addr, proto uint8, port uint16) bool {
	for _, b := range boxes {
		if b.proto == proto && !a.less(b.lo) && !b.hi.less(a) && b.span.lo <= port && port <= b.span.hi {
			return true
		}
	}
	return false
}

func TestDisjointWorkBound(t *testing.T) {
	// Many wide prefixes on distinct ports over many distinct addresses: each address stretch sees
	// every port, so the decomposition is quadratic and must give up.
	var in []box
	for i := range 2000 {
		in = append(in, bx("0.0.0.0", "255.255.255.255", 6, uint16(i), uint16(i)))
		a := addrOf(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}))
		in = append(in, box{lo: a, hi: a, span: span{17, 1, 1}})
	}
	if _, err := disjoint(in, maxWork); err == nil {
		t.Fatal("want an error for a policy that does not decompose")
	}
}

func TestRuleBoxes(t *testing.T) {
	rules := []policy.Rule{{
		CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/126")},
		Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8000, EndPort: 8080}},
	}, {
		CIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")},
	}, {
		CIDRs: []netip.Prefix{netip.MustParsePrefix("::ffff:203.0.113.0/120")},
		Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}},
	}}
	v4, v6 := ruleBoxes(rules)
	want4 := []box{bx("192.0.2.0", "192.0.2.255", 6, 8000, 8080),
		bx("198.51.100.7", "198.51.100.7", 6, 0, 65535), bx("198.51.100.7", "198.51.100.7", 17, 0, 65535),
		bx("198.51.100.7", "198.51.100.7", 132, 0, 65535), bx("203.0.113.0", "203.0.113.255", 17, 53, 53)}
	want6 := []box{bx("2001:db8::", "2001:db8::3", 6, 8000, 8080)}
	if diff := cmp.Diff(want4, v4, cmpBoxes); diff != "" {
		t.Errorf("v4 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want6, v6, cmpBoxes); diff != "" {
		t.Errorf("v6 (-want +got):\n%s", diff)
	}
}

func TestLoopbackSpans(t *testing.T) {
	rules := []policy.LoopbackRule{
		{Action: policy.ActionDeny, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 15000}, {Protocol: policy.TCP, Port: 15001, EndPort: 15005}}},
		{Action: policy.ActionAllow, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 15001}}},
		{Action: policy.ActionDeny, Ports: []policy.PortRange{{Protocol: policy.UDP}}},
	}
	want := []span{{6, 15000, 15005}, {17, 0, 65535}}
	if diff := cmp.Diff(want, loopbackSpans(rules), cmp.AllowUnexported(span{})); diff != "" {
		t.Errorf("loopbackSpans (-want +got):\n%s", diff)
	}
}

// ruleBoxes expands rules into boxes, IPv4 and IPv6 apart: every CIDR times every port range
// (Builder.Add).
func ruleBoxes(rules []policy.Rule) (v4, v6 []box) {
	var b Builder
	for _, r := range rules {
		b.Add(policy.Ingress, r)
	}
	return b.boxes[0], b.boxes[1]
}
