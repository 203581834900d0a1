package report

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

func key(port uint16) Key {
	return Key{Direction: policy.Egress, Peer: netip.MustParseAddr("10.0.0.1"), Protocol: policy.TCP, Port: port}
}

func entry(k Key, count uint64, first, last time.Time, verdict policy.Verdict) policy.ReportEntry {
	return policy.ReportEntry{Direction: k.Direction, Peer: k.Peer, Protocol: k.Protocol, Port: k.Port,
		Count: count, FirstSeen: first, LastSeen: last, Verdict: verdict}
}

func TestAggregateEvictRestore(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := New(2)
	a.Add(key(1), Outcome{Verdict: policy.Allow}, t0)
	a.Add(key(1), Outcome{Verdict: policy.Audit}, t0.Add(time.Second))
	a.Add(key(2), Outcome{Verdict: policy.Allow}, t0.Add(2*time.Second))
	a.Add(key(3), Outcome{Verdict: policy.Allow}, t0.Add(3*time.Second)) // evicts key 1 (2 connections)
	if got := a.Dropped(); got != 2 {
		t.Fatalf("dropped = %d, want 2", got)
	}
	got := a.Drain()
	want := []policy.ReportEntry{
		entry(key(2), 1, t0.Add(2*time.Second), t0.Add(2*time.Second), policy.Allow),
		entry(key(3), 1, t0.Add(3*time.Second), t0.Add(3*time.Second), policy.Allow),
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Fatalf("drain (-want +got):\n%s", d)
	}
	if a.Len() != 0 {
		t.Fatalf("len after drain = %d", a.Len())
	}

	// A failed delivery comes back; a newer observation of the same key merges into it; a full table
	// drops the oldest restored entry rather than a newer one.
	a.Add(key(3), Outcome{Verdict: policy.Allow}, t0.Add(4*time.Second))
	a.Restore(got)
	if a.Len() != 2 {
		t.Fatalf("len after restore = %d, want 2", a.Len())
	}
	after := a.Drain()
	if keyOf(&after[0]) != key(2) || keyOf(&after[1]) != key(3) || after[1].Count != 2 || !after[1].FirstSeen.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after restore: %+v", after)
	}
	a.Add(key(5), Outcome{Verdict: policy.Allow}, t0)
	a.Add(key(6), Outcome{Verdict: policy.Allow}, t0)
	a.Restore([]policy.ReportEntry{entry(key(7), 4, t0, t0, policy.Allow)})
	if got := a.Dropped(); got != 6 {
		t.Fatalf("dropped = %d, want 6", got)
	}
}

func TestBoundUnderFlood(t *testing.T) {
	a := New(1000)
	now := time.Now()
	for i := range 100_000 {
		a.Add(key(uint16(i)), Outcome{Verdict: policy.Allow}, now)
	}
	if a.Len() != 1000 {
		t.Fatalf("len = %d, want the bound 1000", a.Len())
	}
	if got := a.Dropped(); got != 100_000-1000 {
		t.Fatalf("dropped = %d, want %d", got, 100_000-1000)
	}
}

// TestName keeps the name an egress peer was resolved from: a later connection to the peer with no
// name (its answer expired) does not forget it, a new name replaces it, and a restored entry merged
// into a newer one gives it its name only if it has none.
func TestName(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := New(10)
	a.Add(key(443), Outcome{Verdict: policy.Allow, Name: "api.example.com"}, t0)
	a.Add(key(443), Outcome{Verdict: policy.Allow}, t0.Add(time.Second))
	got := a.Drain()
	if len(got) != 1 || got[0].Name != "api.example.com" || got[0].Count != 2 {
		t.Fatalf("entry %+v: want api.example.com, count 2", got)
	}
	a.Add(key(443), Outcome{Verdict: policy.Allow, Name: "cdn.example.net"}, t0.Add(2*time.Second))
	a.Restore(got)
	if after := a.Drain(); len(after) != 1 || after[0].Name != "cdn.example.net" || after[0].Count != 3 {
		t.Fatalf("after restore %+v: want the newer name cdn.example.net, count 3", after)
	}
	a.Add(key(80), Outcome{Verdict: policy.Allow}, t0)
	a.Restore([]policy.ReportEntry{{Direction: policy.Egress, Peer: key(80).Peer, Protocol: policy.TCP, Port: 80, Name: "old.example.com", Count: 1, FirstSeen: t0, LastSeen: t0}})
	if after := a.Drain(); len(after) != 1 || after[0].Name != "old.example.com" {
		t.Fatalf("after restore %+v: want the restored name old.example.com", after)
	}
}
