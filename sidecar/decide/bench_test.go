package decide

import (
	"fmt"
	"net/netip"
	"testing"

	"podwall.io/podwall/api/policy"
)

// benchPolicy returns a policy of n egress and n ingress rules shaped like a large learned policy: one
// peer per rule, mostly single addresses with some /24s and /64s, one port each out of a hundred, and a
// couple of port ranges shared by a few rules. Every size has the same prefix lengths and ranges, so
// that sizes differ only in how many peers the maps hold.
func benchPolicy(n int) *policy.Policy {
	p := &policy.Policy{Namespace: "bench", Workload: "Deployment/bench", Mode: policy.Protect,
		Names: map[netip.Addr]string{}}
	for i := range n {
		r := policy.Rule{
			ID:     fmt.Sprintf("r%d", i),
			Origin: policy.OriginLearned,
			Peer:   fmt.Sprintf("workload:bench/Deployment/w%d", i),
			CIDRs:  []netip.Prefix{benchPrefix(i)},
			Ports:  []policy.PortRange{{Protocol: policy.TCP, Port: uint16(8000 + i%100)}},
		}
		if i%5 == 0 {
			r.Ports = []policy.PortRange{{Protocol: policy.TCP, Port: 30000, EndPort: 32767 - uint16(i%2)}}
		}
		in := r
		in.ID = "in-" + r.ID
		p.Egress = append(p.Egress, r)
		p.Ingress = append(p.Ingress, in)
	}
	return p
}

// benchPrefix returns rule i's peer: a distinct /32, and every fourth rule a /24 or /64 instead.
func benchPrefix(i int) netip.Prefix {
	a4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	switch i % 4 {
	case 1:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), 0}), 24)
	case 2:
		a16 := [16]byte{0xfd, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		return netip.PrefixFrom(netip.AddrFrom16(a16), 64)
	case 3:
		a16 := [16]byte{0xfd, 1, 15: 1}
		a16[13], a16[14] = byte(i>>16), byte(i>>8)
		a16[15] = byte(i)
		return netip.PrefixFrom(netip.AddrFrom16(a16), 128)
	}
	return netip.PrefixFrom(a4, 32)
}

// benchConns returns connections that hit rules of a policy of n rules, interleaved with ones that miss
// (unknown peers, wrong ports), in both directions.
func benchConns(n int) []Conn {
	var conns []Conn
	for i := range 1024 {
		r := (i * 7919) % n
		pfx := benchPrefix(r)
		remote := netip.AddrPortFrom(pfx.Addr(), uint16(8000+r%100))
		if r%5 == 0 {
			remote = netip.AddrPortFrom(pfx.Addr(), 31000)
		}
		switch i % 4 {
		case 0: // allowed egress
			conns = append(conns, Conn{Direction: policy.Egress, Proto: 6, Remote: remote, Local: netip.MustParseAddrPort("10.244.0.5:40000")})
		case 1: // allowed ingress
			conns = append(conns, Conn{Direction: policy.Ingress, Proto: 6, Remote: netip.AddrPortFrom(pfx.Addr(), 40000),
				Local: netip.AddrPortFrom(netip.MustParseAddr("10.244.0.5"), remote.Port())})
		case 2: // known peer, wrong port
			conns = append(conns, Conn{Direction: policy.Egress, Proto: 6, Remote: netip.AddrPortFrom(pfx.Addr(), 22)})
		case 3: // unknown peer
			conns = append(conns, Conn{Direction: policy.Egress, Proto: 6, Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 443)})
		}
	}
	return conns
}

// BenchmarkDecide compares policies of 10 and 100,000 rules per direction: the cost of a decision must
// stay about flat.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		d, err := New(benchPolicy(n), meshPorts)
		if err != nil {
			b.Fatal(err)
		}
		conns := benchConns(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				d.Decide(conns[i%len(conns)])
				i++
			}
		})
	}
}

// fqdnBenchRules is how many FQDN rules BenchmarkDecideFQDN adds: more than a policy would have.
const fqdnBenchRules = 16

// fqdnBenchPolicy is benchPolicy(n) with FQDN rules after the address rules, and connections to
// addresses no address rule names, resolved from a name the last FQDN rule matches (the longest scan),
// or from names no rule matches.
func fqdnBenchPolicy(n int) (*policy.Policy, []Conn) {
	p := benchPolicy(n)
	for i := range fqdnBenchRules {
		p.Egress = append(p.Egress, policy.Rule{ID: fmt.Sprintf("fqdn%d", i), Origin: policy.OriginUser,
			Peer: fmt.Sprintf("fqdn:*.svc%d.example.com", i), Names: []string{fmt.Sprintf("*.svc%d.example.com", i), fmt.Sprintf("api%d.example.com", i)},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 443}}})
	}
	var conns []Conn
	for i := range 1024 {
		c := Conn{Direction: policy.Egress, Proto: 6, Local: netip.MustParseAddrPort("10.244.0.5:40000"),
			Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 443),
			Names:  []string{fmt.Sprintf("cdn%d.example.net", i), fmt.Sprintf("b%d.svc%d.example.com", i, fqdnBenchRules-1)}}
		if i%2 == 1 {
			c.Names = c.Names[:1]
		}
		conns = append(conns, c)
	}
	return p, conns
}

// BenchmarkDecideFQDN: connections judged by FQDN rules, half allowed (through the last rule's
// wildcard), half denied after every rule was scanned.
func BenchmarkDecideFQDN(b *testing.B) {
	p, conns := fqdnBenchPolicy(100_000)
	d, err := New(p, meshPorts)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.Decide(conns[i%len(conns)])
		i++
	}
}

// TestBenchPolicyDecides keeps the benchmark honest: its connections get the verdicts it intends.
func TestBenchPolicyDecides(t *testing.T) {
	p, conns := fqdnBenchPolicy(1000)
	d, err := New(p, meshPorts)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if got := d.Decide(c); (got.Verdict == policy.Allow) != (i%2 == 0) {
			t.Fatalf("fqdn conn %d %+v: %+v", i, c, got)
		}
	}
	for _, n := range []int{10, 1000} {
		d, err := New(benchPolicy(n), meshPorts)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range benchConns(n) {
			got := d.Decide(c)
			if wantAllow := i%4 < 2; (got.Verdict == policy.Allow) != wantAllow {
				t.Fatalf("n=%d conn %d %+v: %+v", n, i, c, got)
			}
		}
	}
}

func BenchmarkNew(b *testing.B) {
	p := benchPolicy(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(p, meshPorts); err != nil {
			b.Fatal(err)
		}
	}
}
