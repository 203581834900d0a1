package agent

import (
	"net/netip"
	"testing"

	"podwall.io/podwall/sidecar/ruleset"
)

// TestSeenKeys: a key is held once, take returns and forgets the keys of the addresses asked for only,
// and past maxSeenKeys new keys are not held.
func TestSeenKeys(t *testing.T) {
	var s seenKeys
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	k1, k2 := ruleset.SeenKey{Addr: a, Proto: 6, Port: 443}, ruleset.SeenKey{Addr: a, Proto: 17, Port: 443}
	s.add(k1)
	s.add(k1)
	s.add(k2)
	s.add(ruleset.SeenKey{Addr: b, Proto: 6, Port: 80})
	if got := s.take([]netip.Addr{a}); len(got) != 2 || got[0] != k1 || got[1] != k2 {
		t.Fatalf("take(%s) = %v, want %v and %v once each", a, got, k1, k2)
	}
	if got := s.take([]netip.Addr{a}); len(got) != 0 || s.n != 1 {
		t.Fatalf("after take: %v, %d held", got, s.n)
	}
	for i := range maxSeenKeys + 10 {
		s.add(ruleset.SeenKey{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Proto: 6, Port: 1})
	}
	if s.n != maxSeenKeys {
		t.Fatalf("%d keys held, want the bound %d", s.n, maxSeenKeys)
	}
}
