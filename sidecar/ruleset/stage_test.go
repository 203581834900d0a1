package ruleset

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

// stagedPolicy is a policy whose allow sets take more than one batch (stageBytes), with the peer's
// addresses allowed on port.
func stagedPolicy(t *testing.T, x *topo, port uint16) *policy.Policy {
	p := largePolicy(30_000)
	p.Egress = append(p.Egress, policy.Rule{ID: "peer", Origin: policy.OriginUser,
		CIDRs: append(host(x.peerAddr), host(x.peerV6)...), Ports: tcp(port)})
	size := 0
	for _, s := range compile(t, p).allowSpecs(table(), "") {
		size += s.count() * elementBytes(s.set)
	}
	if size <= 2*stageBytes {
		t.Fatalf("the staged policy's allow sets take %d bytes, want more than two batches", size)
	}
	return p
}

// allowSetNames are the names of the table's allow sets, sorted.
func allowSetNames(sets map[string][]string) []string {
	var names []string
	for name := range sets {
		if strings.HasPrefix(name, "allow_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// TestStagedApply: a policy too large for one batch is staged, and then enforces exactly what it
// allows, every element in its sets; the next large Apply stages under other names and the staged
// sets of the one before go; a small one goes back to the usual names.
func TestStagedApply(t *testing.T) {
	x := newTopo(t)
	for _, port := range []string{"80", "81"} {
		echo(t, x.peer, net.JoinHostPort("::", port))
	}
	x.waitDAD(t)
	o := Options{Offline: true} // the kernel decides alone, from the allow sets
	big := stagedPolicy(t, x, 80)
	cp := compile(t, big)
	for _, suffix := range []string{"_g1", "_g2", "_g1"} {
		n, err := cp.Apply(x.c, o)
		if err != nil {
			t.Fatal(err)
		}
		if n < 3 {
			t.Errorf("staged Apply committed %d batches, want at least two to stage and one to swap", n)
		}
		_, sets := readBack(t, x.pod, x.c)
		var want []string
		for _, s := range cp.allowSpecs(table(), suffix) {
			want = append(want, s.set.Name)
			if got := len(sets[s.set.Name]); got != s.count() {
				t.Errorf("%s holds %d elements, want %d", s.set.Name, got, s.count())
			}
		}
		slices.Sort(want)
		if diff := cmp.Diff(want, allowSetNames(sets)); diff != "" {
			t.Errorf("allow sets after the Apply staged as %s (-want +got):\n%s", suffix, diff)
		}
		if text := listRuleset(t, x.pod); !strings.Contains(text, "@"+SetAllowEgress4+suffix+exactSuffix) {
			t.Errorf("the rules do not look up the sets staged as %s:\n%s", suffix, text)
		}
		for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
			wantConnect(t, x.pod, ap(peer, 80))
			wantRefused(t, x.pod, ap(peer, 81))
		}
	}
	apply(t, x.c, &policy.Policy{Mode: policy.Protect}, o)
	_, sets := readBack(t, x.pod, x.c)
	want := []string{SetAllowEgress4, SetAllowEgress4Exact, SetAllowEgress6, SetAllowEgress6Exact,
		SetAllowIngress4, SetAllowIngress4Exact, SetAllowIngress6, SetAllowIngress6Exact}
	slices.Sort(want)
	if diff := cmp.Diff(want, allowSetNames(sets)); diff != "" {
		t.Errorf("allow sets after a small Apply (-want +got):\n%s", diff)
	}
}

// TestStagedApplyFails: a staged Apply that the kernel refuses midway, after batches of its were
// committed, leaves the ruleset in force exactly as it was, and none of its staged sets.
func TestStagedApplyFails(t *testing.T) {
	x := newTopo(t)
	for _, port := range []string{"80", "81"} {
		echo(t, x.peer, net.JoinHostPort("::", port))
	}
	x.waitDAD(t)
	o := Options{Offline: true}
	small := &policy.Policy{Mode: policy.Protect, Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser,
		CIDRs: append(host(x.peerAddr), host(x.peerV6)...), Ports: tcp(80)}}}
	for _, before := range []*policy.Policy{small, stagedPolicy(t, x, 80)} {
		apply(t, x.c, before, o)
		chains, sets := readBack(t, x.pod, x.c)

		// A policy that allows port 81 instead, with one element the kernel refuses at the end of the
		// egress IPv4 ranges, which come after more than a batch of elements: one that overlaps the
		// first range (pipapo takes no overlap).
		cp := compile(t, stagedPolicy(t, x, 81))
		k := &cp.allow[2].ranges
		bad := slices.Clone(k.data[:k.step()])
		bad[len(bad)-3]++ // the end key's port: "address . protocol . port" with padding
		k.data = append(k.data, bad...)
		n, err := cp.Apply(x.c, o)
		if err == nil {
			t.Fatal("the kernel took an overlapping range")
		}
		if n < 2 {
			t.Errorf("the failed Apply committed %d batches, want at least one staging batch and the clean-up", n)
		}
		gotChains, gotSets := readBack(t, x.pod, x.c)
		if diff := cmp.Diff(chains, gotChains); diff != "" {
			t.Errorf("chains after the failed Apply (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(sets, gotSets); diff != "" {
			t.Errorf("sets after the failed Apply (-before +after):\n%s", diff)
		}
		for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
			wantConnect(t, x.pod, ap(peer, 80))
			wantRefused(t, x.pod, ap(peer, 81))
		}
	}
}
