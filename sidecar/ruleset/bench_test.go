package ruleset

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
)

// BenchmarkApply10k times one Apply of a policy with 10,000 egress and 10,000 ingress peers (as
// apply_10k_ms of make bench-datapath): building the rules and elements, reading the table's current
// objects, and the one netlink batch that replaces them, in a namespace of its own.
func BenchmarkApply10k(b *testing.B) {
	ns := netnstest.New(b)
	c, err := Dial(ns.Fd())
	if err != nil {
		b.Fatal(err)
	}
	p := largePolicy(10_000)
	o := Options{Queue: QueueCompat}
	if err := Apply(c, p, o); err != nil { // the table exists from now on, as in a running sidecar
		b.Fatal(err)
	}
	var wall, cpu time.Duration
	for b.Loop() {
		start, cpu0 := time.Now(), cpuTime(b)
		if err := Apply(c, p, o); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		cpu += cpuTime(b) - cpu0
	}
	b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "apply_ms")
	// CPU time (user and kernel, every thread of the process) tells the cost apart from waiting for a
	// CPU on a busy machine.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms")
}

func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSetBackends fills one set with the 10k-peer policy's 8,000 single-address IPv4 keys in
// one batch: as a pipapo set (what every allow set would be without the exact sets: each key a range
// of one), as a resizable hash set (no size given), and as a fixed-size hash set (what the exact sets
// are), to show why the exact keys get a set of their own, with a size.
func BenchmarkSetBackends(b *testing.B) {
	boxes, _ := ruleBoxes(largePolicy(10_000).Egress)
	ranges, exact := boxElements(boxes, false)
	if len(ranges) != 1000 { // the /24s
		b.Fatalf("%d ranges", len(ranges))
	}
	asRanges := make([]nftables.SetElement, len(exact))
	for i, e := range exact {
		asRanges[i] = nftables.SetElement{Key: e.Key, KeyEnd: e.Key}
	}
	for _, tc := range []struct {
		name  string
		set   func(*nftables.Table) *nftables.Set
		elems []nftables.SetElement
	}{
		{"pipapo", func(t *nftables.Table) *nftables.Set { return intervalSet(t, "s", keyAddrPort4) }, asRanges},
		{"rhash", func(t *nftables.Table) *nftables.Set { return exactSet(t, "s", keyAddrPort4, 0) }, exact},
		{"hash", func(t *nftables.Table) *nftables.Set { return exactSet(t, "s", keyAddrPort4, len(exact)) }, exact},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ns := netnstest.New(b)
			c, err := Dial(ns.Fd())
			if err != nil {
				b.Fatal(err)
			}
			var cpu time.Duration
			for b.Loop() {
				cpu0 := cpuTime(b)
				t := table()
				c.AddTable(t)
				c.DelTable(t)
				c.AddTable(t)
				s := tc.set(t)
				if err := c.AddSet(s, nil); err != nil {
					b.Fatal(err)
				}
				for _, part := range chunks(s, tc.elems) {
					if err := c.SetAddElements(s, part); err != nil {
						b.Fatal(err)
					}
				}
				if err := c.Flush(); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime(b) - cpu0
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms")
		})
	}
}

// BenchmarkCompile times the user-space part of that Apply alone: expanding the rules into set
// elements and making them disjoint.
func BenchmarkCompile(b *testing.B) {
	p := largePolicy(10_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFQDNSpans times the user-space part of AddFQDN, which runs while a DNS answer waits: the
// ports of a name's rules in a policy of 100,000 address rules and a few FQDN rules.
func BenchmarkFQDNSpans(b *testing.B) {
	p := largePolicy(100_000)
	for i := range 8 {
		p.Egress = append(p.Egress, policy.Rule{ID: fmt.Sprint("fqdn", i), Origin: policy.OriginUser,
			Names: []string{fmt.Sprintf("*.svc%d.example.com", i)}, Ports: tcp(uint16(443 + i))})
	}
	names := []string{"cdn.example.net", "x.svc7.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if len(indexFQDN(p).spans(names)) == 0 {
			b.Fatal("no spans")
		}
	}
}

// BenchmarkAddFQDN times one AddFQDN (one new address for a name a rule on one port allows: a DNS
// answer's cost in the kernel) with n elements already in the FQDN set, to show how it grows with the
// set.
func BenchmarkAddFQDN(b *testing.B) {
	p := &policy.Policy{Mode: policy.Protect, Egress: []policy.Rule{{ID: "api", Origin: policy.OriginUser,
		Peer: policy.NamePeer("*.example.com"), Names: []string{"*.example.com"}, Ports: tcp(443)}}}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for _, n := range []int{0, 1000, 10_000} {
		b.Run(fmt.Sprintf("set=%d", n), func(b *testing.B) {
			ns := netnstest.New(b)
			c, err := Dial(ns.Fd())
			if err != nil {
				b.Fatal(err)
			}
			fc, err := Dial(ns.Fd(), nftables.AsLasting()) // as the agent's DNS path
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { fc.CloseLasting() })
			now := time.Now()
			o := Options{Queue: QueueCompat}
			for i := range n {
				o.FQDN = append(o.FQDN, FQDNAddr{Addr: addr(i), Names: []string{"a.example.com"}, Expires: now.Add(time.Hour)})
			}
			if err := Apply(c, p, o); err != nil {
				b.Fatal(err)
			}
			cp := compile(b, p)
			i := n
			var took []time.Duration
			cpu0 := cpuTime(b)
			for b.Loop() {
				a := FQDNAddr{Addr: addr(i), Names: []string{"a.example.com"}, Expires: now.Add(time.Hour)}
				start := time.Now()
				if err := AddFQDN(fc, cp, []FQDNAddr{a}, now); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				i++
			}
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu_us")
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99_us")
		})
	}
}
