package agent

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/nftables"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// large is w.policy with 30,000 more egress peers, neighbours on other ports (so that they do not
// merge into ranges): its allow sets take more than one netlink batch, so the ruleset stages them
// (ruleset.Compiled.Apply).
func (w *world) large(rev int64, port uint16) *policy.Policy {
	p := w.policy(policy.Protect, rev, port)
	for i := range 30_000 {
		peer := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		p.Egress = append(p.Egress, policy.Rule{ID: fmt.Sprint("filler-", i), Origin: policy.OriginLearned,
			Peer: "cidr:" + peer.String(), CIDRs: []netip.Prefix{peer}, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: uint16(443 + i%2)}}})
	}
	return p
}

// TestLargePolicyFile: a policy file too large for one batch is read into the decider and the
// ruleset as it streams, and enforced by the kernel alone (log-allows none), its allow sets staged;
// the next one replaces it the same way. Neither apply is taken for tampering, and the cache holds
// each file as it was read.
func TestLargePolicyFile(t *testing.T) {
	w := newWorld(t)
	w.write(t, w.large(1, 80))
	a, _ := w.start(t, func(o *Options) { o.Log.Allows = verdictlog.AllowsNone })
	cached := filepath.Join(w.cacheDir, cacheFile)
	for _, step := range []struct {
		rev              int64
		allowed, refused uint16
		staged, unstaged string
	}{{1, 80, 81, "_g1", "_g2"}, {2, 81, 80, "_g2", "_g1"}} {
		if step.rev > 1 {
			w.write(t, w.large(step.rev, step.allowed))
		}
		waitRevision(t, a, step.rev)
		if _, err := w.dial(w.peerAddr(step.allowed)); err != nil {
			t.Fatalf("revision %d: allowed connection: %v", step.rev, err)
		}
		w.mustRefuseFast(t, w.peerAddr(step.refused))
		if names := setNames(t, a); !slices.Contains(names, "allow_egress4"+step.staged+"_exact") ||
			slices.Contains(names, "allow_egress4"+step.unstaged+"_exact") {
			t.Errorf("revision %d: want the allow sets staged as %s alone: %q", step.rev, step.staged, names)
		}
		file, err := os.ReadFile(w.policyFile)
		if err != nil {
			t.Fatal(err)
		}
		if cache, err := os.ReadFile(cached); err != nil || !bytes.Equal(cache, file) {
			t.Errorf("revision %d: the cache (%d bytes, %v) is not the policy file (%d bytes)", step.rev, len(cache), err, len(file))
		}
	}
	if got := promtest.ToFloat64(a.tampered); got != 0 {
		t.Errorf("podwall_ruleset_tamper_total %v after the sidecar's own staged applies, want 0", got)
	}
}

// setNames are the names of the sets of the podwall table.
func setNames(t *testing.T, a *Agent) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	sets, err := a.nft.GetSets(&nftables.Table{Name: ruleset.TableName, Family: nftables.TableFamilyINet})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sets {
		names = append(names, s.Name)
	}
	return names
}
