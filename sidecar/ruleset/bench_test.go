package ruleset

import (
	"testing"
	"time"

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
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		if err := Apply(c, p, o); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "apply_ms")
}

// BenchmarkBuildSets times the user-space part of that Apply alone: expanding the rules into set
// elements and making them disjoint.
func BenchmarkBuildSets(b *testing.B) {
	p := largePolicy(10_000)
	o, err := Options{Queue: QueueCompat}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildSets(table(), p, o); err != nil {
			b.Fatal(err)
		}
	}
}
