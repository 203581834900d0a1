//go:build bench

package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
)

// applyPeers is the size of the policy whose apply time is measured.
const applyPeers = 10_000

// measureApply times ruleset.Apply of a 10,000-peer Protect policy and, as its baseline, of a 10-peer
// one, each in a namespace of its own that already holds the table (so that every timed Apply replaces
// a ruleset in one batch, as a policy update in a running sidecar does). The rounds alternate between
// the two sizes; each size's figure is its median round in milliseconds: the target bounds the
// latency of an update, so the typical one counts, not the luckiest.
func measureApply(t *testing.T, rounds int) (large, small float64) {
	t.Helper()
	server := netip.MustParseAddr("192.0.2.1")
	sizes := []struct {
		p *policy.Policy
		c *nftOnly
	}{
		{benchPolicy(applyPeers, server, connPort), newNFTOnly(t)},
		{benchPolicy(smallPolicy, server, connPort), newNFTOnly(t)},
	}
	times := make([][]float64, len(sizes))
	for r := range rounds + 1 {
		for i, s := range sizes {
			start := time.Now()
			s.c.apply(t, s.p)
			if r > 0 { // round 0 creates the table
				times[i] = append(times[i], float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	return testutil.Median(times[0]), testutil.Median(times[1])
}

// nftOnly is a fresh namespace and an nftables connection into it, for timing Apply alone.
type nftOnly struct {
	conn *nftables.Conn
	opts ruleset.Options
}

// newNFTOnly opens a namespace with the queue kind this kernel supports, as the sidecar picks it.
func newNFTOnly(t *testing.T) *nftOnly {
	t.Helper()
	ns := netnstest.New(t)
	c, err := ruleset.Dial(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	kind, err := ruleset.DetectQueue(c)
	if err != nil {
		t.Fatalf("detect queue: %v", err)
	}
	return &nftOnly{conn: c, opts: ruleset.Options{Queue: kind, QueueNum: 100, QueueCount: 2}}
}

func (n *nftOnly) apply(t *testing.T, p *policy.Policy) {
	t.Helper()
	if err := ruleset.Apply(n.conn, p, n.opts); err != nil {
		t.Fatalf("apply %d-rule policy: %v", len(p.Egress), err)
	}
}
