package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset/marktest"
)

// forgedMarks are the marks an app holding CAP_NET_RAW puts on its socket: the sidecar's own, the
// verdicts', every podwall bit, every bit.
var forgedMarks = []uint32{MarkSelf, MarkAllow, MarkDeny | MarkAllow, MarkMask, 0xffffffff}

// TestForgedMarks attacks with marks: an app holding CAP_NET_RAW alone sets each podwall mark on its
// socket and connects over TCP and UDP, IPv4 and IPv6, to a peer port the verdict loop denies, and
// over loopback to a loopback deny port. The listeners receive nothing; every attempt is queued to the
// verdict loop (which logs it) and refused, the deny memo emptied before each; nothing is remembered in the seen sets, so an ordinary
// process is refused afterwards; and a forged MarkAllow to an allowed port is queued like any other.
func TestForgedMarks(t *testing.T) {
	x := newTopo(t)
	tcp81, udp81 := marktest.Count(t, x.peer, "tcp", "[::]:81"), marktest.Count(t, x.peer, "udp", "[::]:81")
	tcp80, udp80 := marktest.Count(t, x.peer, "tcp", "[::]:80"), marktest.Count(t, x.peer, "udp", "[::]:80")
	lo15000 := marktest.Count(t, x.pod, "tcp", "127.0.0.1:15000")
	v := &verdicts{}
	v.serve(t, x.pod, 6)
	p := &policy.Policy{Mode: policy.Protect, Loopback: []policy.LoopbackRule{{ID: "admin", Origin: policy.OriginUser,
		Action: policy.ActionDeny, Ports: tcp(15000)}}}
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 6})
	x.waitDAD(t)
	att := marktest.New(t, x.pod)

	lo := netip.MustParseAddr("127.0.0.1")
	for _, mark := range forgedMarks {
		for _, to := range []struct {
			network string
			addr    netip.AddrPort
		}{{"tcp", ap(x.peerAddr, 81)}, {"tcp", ap(x.peerV6, 81)}, {"udp", ap(x.peerAddr, 81)}, {"udp", ap(x.peerV6, 81)},
			{"tcp", ap(lo, 15000)}} {
			x.forgetDenials(t) // so that each attempt is queued, not refused by the deny memo
			before := v.queued.Load()
			// A queued datagram is sent as far as its socket knows: only the peer can tell.
			if err := att.Connect(mark, to.network, to.addr); to.network == "tcp" && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("mark %#x, tcp to %s: %v, want connection refused", mark, to.addr, err)
			}
			// A datagram reaches the queue after its send returns (an IPv6 one may first wait for
			// neighbour discovery): wait for it, then make sure it came alone.
			testutil.Eventually(t, 5*time.Second, func() error {
				if n := v.queued.Load() - before; n != 1 {
					return fmt.Errorf("mark %#x, %s to %s: %d packets queued, want 1 (judged and logged)", mark, to.network, to.addr, n)
				}
				return nil
			})
		}
	}
	_, sets := readBack(t, x.pod, x.c)
	for _, name := range []string{SetSeenEgress4, SetSeenEgress6, SetSeenIngress4, SetSeenIngress6} {
		if len(sets[name]) != 0 {
			t.Errorf("set %s holds %v after the attacks, want nothing", name, sets[name])
		}
	}
	// Nothing planted: an ordinary process is refused too.
	wantRefused(t, x.pod, ap(x.peerAddr, 81))
	wantRefused(t, x.pod, ap(x.peerV6, 81))
	sendUDP(t, x.pod, ap(x.peerAddr, 81))
	// Sent last over the same path, these arrive after anything the attackers sent.
	if err := marktest.Dial(x.pod, 0, ap(x.peerAddr, 80)); err != nil {
		t.Fatalf("connection to an allowed port: %v", err)
	}
	sendUDP(t, x.pod, ap(x.peerAddr, 80))
	udp80.WaitReceived(t, 1, "udp 80")
	for what, c := range map[string]*marktest.Counter{"tcp 81": tcp81, "udp 81": udp81, "loopback 15000": lo15000} {
		if n := c.Received(); n != 0 {
			t.Errorf("%s received %d from attackers with forged marks, want 0", what, n)
		}
	}

	// A forged MarkAllow skips nothing: the connection to an allowed port is queued and judged.
	before := v.queued.Load()
	if err := att.Connect(MarkAllow, "tcp", ap(x.peerV6, 80)); err != nil {
		t.Errorf("forged MarkAllow to an allowed port: %v, want a connection", err)
	}
	if n := v.queued.Load() - before; n != 1 {
		t.Errorf("forged MarkAllow to an allowed port: %d packets queued, want 1", n)
	}
	tcp80.WaitReceived(t, 2, "tcp 80")
}

// TestForgedMarksAllowLog attacks the ruleset as the sidecar runs it where the kernel can log
// (AllowLog, log-allows first): the allow sets accept port 80 in the kernel and remember its key as
// seen. An app holding CAP_NET_RAW alone, with each podwall mark on its socket, still has every TCP
// attempt to port 81 queued and refused, its listener receives nothing, and the seen sets end up
// holding only the key the policy allows.
func TestForgedMarksAllowLog(t *testing.T) {
	x := newTopo(t)
	tcp81 := marktest.Count(t, x.peer, "tcp", "[::]:81")
	tcp80 := marktest.Count(t, x.peer, "tcp", "[::]:80")
	v := &verdicts{}
	v.serve(t, x.pod, 6)
	p := &policy.Policy{Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}}}
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 6, AllowLog: true})
	att := marktest.New(t, x.pod)
	for _, mark := range forgedMarks {
		x.forgetDenials(t)
		before := v.queued.Load()
		if err := att.Connect(mark, "tcp", ap(x.peerAddr, 81)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("mark %#x, tcp to port 81: %v, want connection refused", mark, err)
		}
		if n := v.queued.Load() - before; n != 1 {
			t.Errorf("mark %#x, tcp to port 81: %d packets queued, want 1 (judged and logged)", mark, n)
		}
		if err := att.Connect(mark, "tcp", ap(x.peerAddr, 80)); err != nil {
			t.Errorf("mark %#x, tcp to the allowed port 80: %v, want a connection", mark, err)
		}
	}
	tcp80.WaitReceived(t, int64(len(forgedMarks)), "tcp 80")
	if n := tcp81.Received(); n != 0 {
		t.Errorf("port 81 received %d from attackers with forged marks, want 0", n)
	}
	_, sets := readBack(t, x.pod, x.c)
	if want := []string{x.peerAddr.String() + " . 6 . 80"}; !slices.Equal(sets[SetSeenEgress4], want) {
		t.Errorf("seen egress keys %v after the attacks, want only the allowed %v", sets[SetSeenEgress4], want)
	}
	wantRefused(t, x.pod, ap(x.peerAddr, 81))
}

// sendUDP sends one datagram from ns, as an ordinary process.
func sendUDP(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	c, err := ns.Dial("udp", addr.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("udp to %s: %v", addr, err)
	}
}

// TestSelfDests: MarkSelf passes to the sidecar's own destinations only, under deny-all: one added
// with AddSelfDest (before its socket connects) or kept in Options.SelfDests across an Apply; a
// destination dropped from them is judged again. What remains (SECURITY.md): an app that forges
// MarkSelf reaches exactly those destinations.
func TestSelfDests(t *testing.T) {
	x := newTopo(t)
	policygen, other := marktest.Count(t, x.peer, "tcp", "[::]:9443"), marktest.Count(t, x.peer, "tcp", "[::]:81")
	v := &verdicts{}
	v.serve(t, x.pod, 7)
	o := Options{Queue: QueueCompat, QueueNum: 7}
	apply(t, x.c, nil, o)
	x.waitDAD(t)
	att := marktest.New(t, x.pod)
	pg4, pg6 := ap(x.peerAddr, 9443), ap(x.peerV6, 9443)

	if err := marktest.Dial(x.pod, MarkSelf, pg4); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("MarkSelf to a destination the sidecar has not added: %v, want connection refused", err)
	}
	for _, d := range []netip.AddrPort{pg4, pg6} {
		if err := AddSelfDest(x.c, Dest{Proto: policy.TCP, Addr: d}); err != nil {
			t.Fatal(err)
		}
		if err := marktest.Dial(x.pod, MarkSelf, d); err != nil {
			t.Errorf("the sidecar's own connection to %s: %v", d, err)
		}
	}
	// Adding again is harmless, in any spelling.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(x.peerAddr.As16()), 9443)
	if err := AddSelfDest(x.c, Dest{Proto: policy.TCP, Addr: mapped}); err != nil {
		t.Errorf("adding a destination again: %v", err)
	}
	o.SelfDests = []Dest{{Proto: policy.TCP, Addr: pg6}, {Proto: policy.TCP, Addr: pg6}}
	apply(t, x.c, nil, o)
	if err := marktest.Dial(x.pod, MarkSelf, pg6); err != nil {
		t.Errorf("the sidecar's own connection after re-Apply: %v", err)
	}
	if err := marktest.Dial(x.pod, MarkSelf, pg4); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("MarkSelf to a destination no longer the sidecar's: %v, want connection refused", err)
	}
	policygen.WaitReceived(t, 3, "policygen stand-in")

	// The attacker: MarkSelf reaches the sidecar's own destination, and nothing else.
	if err := att.Connect(MarkSelf, "tcp", pg6); err != nil {
		t.Errorf("forged MarkSelf to the sidecar's own destination: %v (the documented remainder)", err)
	}
	policygen.WaitReceived(t, 4, "policygen stand-in")
	for _, to := range []netip.AddrPort{ap(x.peerV6, 81), pg4} {
		if err := att.Connect(MarkSelf, "tcp", to); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("forged MarkSelf to %s: %v, want connection refused", to, err)
		}
	}
	if n := other.Received(); n != 0 {
		t.Errorf("port 81 received %d connections with a forged MarkSelf, want 0", n)
	}
}
