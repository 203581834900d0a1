package revoke

import (
	"net/netip"
	"testing"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// TestLocalAddrs lists a namespace's addresses from outside it, as a sidecar given NetNS does.
func TestLocalAddrs(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := netnstest.New(t), netnstest.New(t)
	la, lb := netnstest.Pair(t, a, b)
	l, err := localAddrs(a.Fd())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []netip.Addr{la.Addr.Addr(), netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		if !l.has(want) {
			t.Errorf("%s is not local in %v", want, l)
		}
	}
	if l.has(lb.Addr.Addr()) {
		t.Errorf("the peer's %s is local in %v", lb.Addr.Addr(), l)
	}
}
