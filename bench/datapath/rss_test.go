//go:build bench

package datapath

import (
	"testing"

	"podwall.io/podwall/internal/testutil"
)

// TestRSS measures the sidecar's memory alone, without TestDatapath's load: its peak with a
// 100,000-peer policy against a 10-peer one, and its resident memory idle under the 10-peer policy.
// It prints the lines TestDatapath prints for them (there, rss_mib is taken after the load).
func TestRSS(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sidecarBinary(t)
	dir := t.TempDir()
	small := startBench(t, bin, dir, "rss10", smallPolicy, false)
	big := startBench(t, bin, dir, "rss100k", largePolicy, false)
	reportIdleRSS(t, small)
	report(t, "rss_mib", big.peakRSS(t), "MiB", small.peakRSS(t), rssTarget)
}
