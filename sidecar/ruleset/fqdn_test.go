package ruleset

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// fqdnPolicy allows api.example.com on TCP 81 and *.other.example.com on TCP 83 to 84.
func fqdnPolicy() *policy.Policy {
	return &policy.Policy{Mode: policy.Protect, Egress: []policy.Rule{
		{ID: "api", Origin: policy.OriginUser, Peer: policy.NamePeer("api.example.com"), Names: []string{"api.example.com"}, Ports: tcp(81)},
		{ID: "other", Origin: policy.OriginUser, Peer: policy.NamePeer("*.other.example.com"), Names: []string{"*.other.example.com"},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 83, EndPort: 84}}},
	}}
}

// fqdnExpiry returns how long the kernel keeps the element of the FQDN sets for addr, proto and
// port: its time left, or 0 if there is none.
func fqdnExpiry(t *testing.T, c *nftables.Conn, v6 bool, a netip.Addr, proto uint8, port uint16) time.Duration {
	t.Helper()
	ranges, exact := fqdnSets(table(), v6)
	want := fmt.Sprintf("%s . %d . %d", a, proto, port)
	for _, s := range []*nftables.Set{ranges, exact} {
		elems, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range elems {
			if decodeElement(s, e) == want {
				return e.Expires
			}
		}
	}
	return 0
}

// TestFQDNTraffic: under LogAllowsNone (with a verdict loop that denies the FQDN rules' ports) and
// Offline, an address added with AddFQDN connects on its names' rules' ports in the kernel, never on
// other ports, and stops connecting when its timeout runs out; an address that an allowed and a
// denied name share gets only the allowed name's ports.
func TestFQDNTraffic(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"lognone", Options{Queue: QueueCompat, QueueNum: 8, LogAllows: LogAllowsNone}},
		{"offline", Options{Offline: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newTopo(t)
			for _, port := range []string{":81", ":83", ":84"} {
				echo(t, x.peer, "[::]"+port)
			}
			v := &verdicts{}
			if !tc.o.Offline {
				v.serve(t, x.pod, tc.o.QueueNum)
			}
			p := fqdnPolicy()
			apply(t, x.c, p, tc.o)
			x.waitDAD(t)
			for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
				wantRefused(t, x.pod, ap(peer, 81))
			}
			queued := v.queued.Load()

			const ttl = 1500 * time.Millisecond
			now := time.Now()
			add := func(a netip.Addr, names ...string) {
				t.Helper()
				if err := AddFQDN(x.c, compile(t, p), []FQDNAddr{{Addr: a, Names: names, Expires: now.Add(ttl)}}, now); err != nil {
					t.Fatalf("AddFQDN %s %v: %v", a, names, err)
				}
			}
			add(x.peerAddr, "api.example.com")
			add(x.peerV6, "evil.example.org", "api.example.com")
			for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
				wantConnect(t, x.pod, ap(peer, 81))
				wantRefused(t, x.pod, ap(peer, 83)) // the other rule's port: its name did not resolve here
			}
			if n := v.queued.Load() - queued; !tc.o.Offline && n != 2 {
				t.Errorf("%d connections queued, want 2 (those to port 83): the FQDN set decides in the kernel", n)
			}
			// Both names resolve to the IPv4 peer now: both rules' ports.
			add(x.peerAddr, "api.example.com", "www.other.example.com")
			for _, port := range []uint16{81, 83, 84} {
				wantConnect(t, x.pod, ap(x.peerAddr, port))
			}
			// The timeout runs out: refused again.
			testutil.Eventually(t, ttl+3*time.Second, func() error {
				if _, _, err := connect(x.pod, ap(x.peerAddr, 81), time.Second); err == nil {
					return fmt.Errorf("connection to %s still allowed after its element's timeout", x.peerAddr)
				}
				return nil
			})
			if left := time.Until(now.Add(ttl)); left > 0 {
				t.Errorf("element gone %s before its timeout", left)
			}
			wantRefused(t, x.pod, ap(x.peerV6, 81))
		})
	}
}

// TestAddFQDN checks the FQDN sets in the kernel: AddFQDN gives an element there the new timeout
// (refresh), adds nothing for names no rule matches or for an expired answer, takes an IPv4 address
// written as IPv6 as IPv4, and an Apply with Options.FQDN keeps live addresses with their time left
// (and drops expired ones) under the new policy's ports.
func TestAddFQDN(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	p := fqdnPolicy()
	apply(t, c, p, Options{Offline: true})
	a4, a6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	now := time.Now()
	add := func(a FQDNAddr) {
		t.Helper()
		if err := AddFQDN(c, compile(t, p), []FQDNAddr{a}, now); err != nil {
			t.Fatalf("AddFQDN %+v: %v", a, err)
		}
	}
	add(FQDNAddr{Addr: a4, Names: []string{"api.example.com"}, Expires: now.Add(2 * time.Second)})
	if left := fqdnExpiry(t, c, false, a4, 6, 81); left <= 0 || left > 2*time.Second {
		t.Fatalf("element %s expires in %s, want within 2s", a4, left)
	}
	add(FQDNAddr{Addr: netip.AddrFrom16(a4.As16()), Names: []string{"api.example.com"}, Expires: now.Add(time.Hour)})
	if left := fqdnExpiry(t, c, false, a4, 6, 81); left < 59*time.Minute {
		t.Errorf("refreshed element %s expires in %s, want about an hour", a4, left)
	}
	add(FQDNAddr{Addr: a6, Names: []string{"a.other.example.com"}, Expires: now.Add(time.Minute)})
	add(FQDNAddr{Addr: a6, Names: []string{"unrelated.example.org"}, Expires: now.Add(time.Hour)})
	add(FQDNAddr{Addr: a6, Names: []string{"api.example.com"}, Expires: now.Add(-time.Second)})
	_, sets := readBack(t, ns, c)
	want := map[string][]string{
		SetFQDNEgress4: {}, SetFQDNEgress4Exact: {"192.0.2.1 . 6 . 81"},
		SetFQDNEgress6: {"2001:db8::1 . 6 . 83-84"}, SetFQDNEgress6Exact: {},
	}
	for name, w := range want {
		if fmt.Sprint(sets[name]) != fmt.Sprint(w) {
			t.Errorf("set %s = %v, want %v", name, sets[name], w)
		}
	}

	// A new policy: api.example.com on 81-83 meets the other rule's 83-84, so both are cut at 83.
	p2 := fqdnPolicy()
	p2.Egress[0].Ports = []policy.PortRange{{Protocol: policy.TCP, Port: 81, EndPort: 83}}
	now = time.Now()
	apply(t, c, p2, Options{Offline: true, FQDN: []FQDNAddr{
		{Addr: a4, Names: []string{"api.example.com", "x.other.example.com"}, Expires: now.Add(time.Minute)},
		{Addr: a6, Names: []string{"api.example.com"}, Expires: now.Add(-time.Second)},
	}})
	_, sets = readBack(t, ns, c)
	want = map[string][]string{
		SetFQDNEgress4: {"192.0.2.1 . 6 . 81-82"}, SetFQDNEgress4Exact: {"192.0.2.1 . 6 . 83", "192.0.2.1 . 6 . 84"},
		SetFQDNEgress6: {}, SetFQDNEgress6Exact: {},
	}
	for name, w := range want {
		if fmt.Sprint(sets[name]) != fmt.Sprint(w) {
			t.Errorf("after Apply: set %s = %v, want %v", name, sets[name], w)
		}
	}
	if left := fqdnExpiry(t, c, false, a4, 6, 83); left <= 50*time.Second || left > time.Minute {
		t.Errorf("element kept by Apply expires in %s, want its minute left", left)
	}
	// The cut makes later answers for one name or the other equal or disjoint elements: no overlap.
	p = p2
	add(FQDNAddr{Addr: a4, Names: []string{"api.example.com"}, Expires: now.Add(time.Hour)})
	add(FQDNAddr{Addr: a4, Names: []string{"y.other.example.com"}, Expires: now.Add(time.Hour)})
	if left := fqdnExpiry(t, c, false, a4, 6, 83); left < 59*time.Minute {
		t.Errorf("element refreshed by another name expires in %s, want about an hour", left)
	}
	// One answer's addresses in one batch: an address twice (two names' chains end at it) and one more
	// (keys of one port: the exact sets).
	a4b := netip.MustParseAddr("192.0.2.2")
	if err := AddFQDN(c, compile(t, p), []FQDNAddr{
		{Addr: a4b, Names: []string{"api.example.com"}, Expires: now.Add(time.Minute)},
		{Addr: a4b, Names: []string{"api.example.com", "z.other.example.com"}, Expires: now.Add(time.Minute)},
		{Addr: a6, Names: []string{"api.example.com"}, Expires: now.Add(time.Minute)},
	}, now); err != nil {
		t.Fatalf("AddFQDN of one answer: %v", err)
	}
	for _, k := range []struct {
		a    netip.Addr
		port uint16
	}{{a4b, 83}, {a4b, 84}, {a6, 83}} {
		if left := fqdnExpiry(t, c, k.a.Is6(), k.a, 6, k.port); left <= 0 {
			t.Errorf("answer's element %s . 6 . %d missing", k.a, k.port)
		}
	}
}

// TestFQDNSpans: a name's rules' ports, cut where any FQDN rule's ports start or end.
func TestFQDNSpans(t *testing.T) {
	p := &policy.Policy{Egress: []policy.Rule{
		{ID: "cidr", CIDRs: pfx("10.0.0.0/8"), Ports: tcp(443)}, // no names: cuts nothing
		{ID: "a", Names: []string{"a.example.net"}, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 80, EndPort: 90},
			{Protocol: policy.ICMP}}},
		{ID: "b", Names: []string{"*.example.com"}, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 85, EndPort: 100}}},
		{ID: "all", Names: []string{"all.example.org"}},
	}}
	for _, tc := range []struct {
		names []string
		want  []span
	}{
		{nil, nil},
		{[]string{"nothing.example.net"}, nil},
		{[]string{"a.example.net"}, []span{{6, 80, 84}, {6, 85, 90}}}, // a's ports, cut where b's start; a's ICMP left to the queue
		{[]string{"b.example.com"}, []span{{6, 85, 90}, {6, 91, 100}}},
		{[]string{"all.example.org"}, []span{{6, 0, 79}, {6, 80, 84}, {6, 85, 90}, {6, 91, 100}, {6, 101, 65535}, {17, 0, 65535}, {132, 0, 65535}}},
	} {
		if got := indexFQDN(p).spans(tc.names); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("spans(%v) = %v, want %v", tc.names, got, tc.want)
		}
	}
}

// TestForgetSeen: a seen key that ForgetSeen deletes is queued (judged) again on the next connection;
// keys not there, in either family, are no error, and neither is a table without seen sets.
func TestForgetSeen(t *testing.T) {
	x := newTopo(t)
	echo(t, x.peer, "[::]:80")
	v := &verdicts{}
	v.serve(t, x.pod, 13)
	o := Options{Queue: QueueCompat, QueueNum: 13}
	apply(t, x.c, nil, o)
	x.waitDAD(t)
	for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
		wantConnect(t, x.pod, ap(peer, 80))
	}
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	if n := v.queued.Load(); n != 2 {
		t.Fatalf("%d connections queued, want 2 (the repeat is a seen key)", n)
	}
	keys := []SeenKey{
		{Addr: netip.AddrFrom16(x.peerAddr.As16()), Proto: 6, Port: 80}, // IPv4 written as IPv6
		{Addr: x.peerV6, Proto: 6, Port: 80},
		{Addr: x.peerAddr, Proto: 6, Port: 81}, // not there
		{Addr: netip.MustParseAddr("2001:db8::1"), Proto: 17, Port: 53},
	}
	if err := ForgetSeen(x.c, keys); err != nil {
		t.Fatalf("ForgetSeen: %v", err)
	}
	_, sets := readBack(t, x.pod, x.c)
	for _, name := range []string{SetSeenEgress4, SetSeenEgress6} {
		if len(sets[name]) != 0 {
			t.Errorf("set %s = %v after ForgetSeen, want empty", name, sets[name])
		}
	}
	for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
		wantConnect(t, x.pod, ap(peer, 80))
	}
	if n := v.queued.Load(); n != 4 {
		t.Errorf("%d connections queued, want 4 (the forgotten keys judged again)", n)
	}
	if err := ForgetSeen(x.c, keys); err != nil {
		t.Errorf("ForgetSeen of keys already gone: %v", err)
	}
	apply(t, x.c, nil, Options{Queue: QueueCompat, QueueNum: 13, LogAllows: LogAllowsAll})
	if err := ForgetSeen(x.c, keys); err != nil {
		t.Errorf("ForgetSeen without seen sets: %v", err)
	}
}

// TestForgetSeenFullSet: in a full seen set, where adding a missing key fails, ForgetSeen still
// deletes the keys there and ignores the missing ones.
func TestForgetSeenFullSet(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	apply(t, c, nil, Options{Queue: QueueCompat})
	set, err := c.GetSetByName(table(), SetSeenEgress4)
	if err != nil {
		t.Fatal(err)
	}
	elems := make([]nftables.SetElement, seenSize)
	for i := range elems {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		elems[i] = nftables.SetElement{Key: addrKey(nil, addrOf(a), false, 6, 80)}
	}
	for _, part := range chunks(set, elems) {
		if err := c.SetAddElements(set, part); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("filling the seen set: %v", err)
	}
	there := SeenKey{Addr: netip.MustParseAddr("10.0.0.7"), Proto: 6, Port: 80}
	if err := ForgetSeen(c, []SeenKey{there, {Addr: netip.MustParseAddr("10.1.0.0"), Proto: 6, Port: 80}}); err != nil {
		t.Fatalf("ForgetSeen in a full set: %v", err)
	}
	got, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != seenSize-1 {
		t.Errorf("%d keys left, want %d", len(got), seenSize-1)
	}
	for _, e := range got {
		if s := decodeElement(set, e); s == "10.0.0.7 . 6 . 80" {
			t.Errorf("key %s still there", s)
		}
	}
}

// indexFQDN returns the index of p's FQDN rules.
func indexFQDN(p *policy.Policy) *fqdnIndex {
	var x fqdnIndex
	for _, r := range p.Egress {
		if len(r.Names) > 0 {
			x.add(r)
		}
	}
	return x.done()
}
