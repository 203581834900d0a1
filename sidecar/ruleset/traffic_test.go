package ruleset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr/testr"
	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/nflog"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/packet"
)

// fastRefusal is how soon a refused connection must fail: a silently dropped SYN would hang instead.
const fastRefusal = 100 * time.Millisecond

// topo is a pod namespace holding the ruleset and a peer namespace, linked by a veth pair.
type topo struct {
	pod, peer         *netnstest.NS
	podAddr, peerAddr netip.Addr
	podV6, peerV6     netip.Addr
	c                 *nftables.Conn
}

func newTopo(t *testing.T) *topo {
	pod, peer := netnstest.New(t), netnstest.New(t)
	a, b := netnstest.Pair(t, pod, peer)
	x := &topo{pod: pod, peer: peer, podAddr: a.Addr.Addr(), peerAddr: b.Addr.Addr(), c: dial(t, pod)}
	x.podV6, x.peerV6 = v6Of(t, pod, a.Name), v6Of(t, peer, b.Name)
	return x
}

// v6Of returns the global IPv6 address netnstest gave a link.
func v6Of(t *testing.T, ns *netnstest.NS, link string) netip.Addr {
	var found netip.Addr
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && !p.Addr().IsLinkLocalUnicast() {
				found = p.Addr()
			}
		}
		return err
	})
	if err != nil || !found.IsValid() {
		t.Fatalf("ipv6 address of %s: %v", link, err)
	}
	return found
}

// waitDAD waits until duplicate address detection has finished on both sides: while a link-local
// address is tentative, the first IPv6 SYN is lost and retried a second later, ruleset or not.
func (x *topo) waitDAD(t *testing.T) {
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, ns := range []*netnstest.NS{x.pod, x.peer} {
			if out := ns.Exec(t, "ip", "-6", "addr", "show", "tentative"); out != "" {
				return fmt.Errorf("IPv6 addresses still tentative in %s:\n%s", ns.Name, out)
			}
		}
		return nil
	})
}

// echo serves connections on ns at addr, echoing what they send after a greeting that names the
// listener, until the test ends.
func echo(t *testing.T, ns *netnstest.NS, addr string) {
	l := ns.Listen(t, "tcp", addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, addr+"\n"); err == nil {
					_, _ = io.Copy(c, c)
				}
			}()
		}
	}()
}

// connect dials from ns and reads the greeting; it returns the greeting, how long the attempt took,
// and the error.
func connect(ns *netnstest.NS, addr netip.AddrPort, timeout time.Duration) (string, time.Duration, error) {
	start := time.Now()
	c, err := ns.Dial("tcp", addr.String(), timeout)
	if err != nil {
		return "", time.Since(start), err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), time.Since(start), err
}

func wantConnect(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	if _, _, err := connect(ns, addr, 2*time.Second); err != nil {
		t.Errorf("connect %s: %v, want a connection", addr, err)
	}
}

func wantRefused(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	_, took, err := connect(ns, addr, 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect %s: %v, want connection refused", addr, err)
	} else if took > fastRefusal {
		t.Errorf("connect %s refused after %s, want under %s", addr, took, fastRefusal)
	}
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func host(a netip.Addr) []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())} }

// TestOffline: with no verdict loop at all, what the allow sets allow connects in both directions and
// families, and the rest is refused fast; the sidecar's own port is open; loopback deny ports are
// refused, other loopback passes.
func TestOffline(t *testing.T) {
	x := newTopo(t)
	for _, port := range []string{"80", "81"} {
		echo(t, x.peer, net.JoinHostPort("::", port))
	}
	for _, addr := range []string{":8080", ":8081", ":9090", "127.0.0.1:15000"} {
		echo(t, x.pod, addr)
	}
	p := &policy.Policy{Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: append(host(x.peerAddr), host(x.peerV6)...), Ports: tcp(80)}},
		Ingress: []policy.Rule{{ID: "peer-in", Origin: policy.OriginUser, CIDRs: append(host(x.peerAddr), host(x.peerV6)...),
			Ports: tcp(8080)}},
		Loopback: []policy.LoopbackRule{{ID: "admin", Origin: policy.OriginUser, Action: policy.ActionDeny, Ports: tcp(15000)}},
	}
	apply(t, x.c, p, Options{Offline: true, SelfPorts: []uint16{9090}})
	x.waitDAD(t)
	for _, peer := range []netip.Addr{x.peerAddr, x.peerV6} {
		wantConnect(t, x.pod, ap(peer, 80))
		wantRefused(t, x.pod, ap(peer, 81))
	}
	for _, pod := range []netip.Addr{x.podAddr, x.podV6} {
		wantConnect(t, x.peer, ap(pod, 8080))
		wantRefused(t, x.peer, ap(pod, 8081))
		wantConnect(t, x.peer, ap(pod, 9090)) // the sidecar's own port: probes pass in every mode
	}
	wantConnect(t, x.pod, ap(netip.MustParseAddr("127.0.0.1"), 8080))
	wantRefused(t, x.pod, ap(netip.MustParseAddr("127.0.0.1"), 15000))
	wantUDPRefused(t, x.pod, ap(x.peerAddr, 53))
}

// wantUDPRefused sends a datagram from ns: the reject at output drops it, which the sending socket
// learns at once (EPERM), instead of waiting for an answer that never comes.
func wantUDPRefused(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	c, err := ns.Dial("udp", addr.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("udp to %s: %v, want operation not permitted", addr, err)
	}
}

// TestEstablishedSurviveReapply: a connection open before a re-Apply that no longer allows it keeps
// working; a new one is refused.
func TestEstablishedSurviveReapply(t *testing.T) {
	x := newTopo(t)
	echo(t, x.peer, ":80")
	allow := &policy.Policy{Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}}}
	apply(t, x.c, allow, Options{Offline: true})
	c, err := x.pod.Dial("tcp", ap(x.peerAddr, 80).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apply(t, x.c, nil, Options{Offline: true})
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "still here\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	got := ""
	for !strings.HasSuffix(got, "still here\n") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("established connection after re-apply: %v (read %q)", err, got)
		}
		got += string(buf[:n])
	}
	wantRefused(t, x.pod, ap(x.peerAddr, 80))
}

// TestQueueWithoutListener: with queue rules and nothing bound to the queue, a new connection hangs
// when failing closed and passes when failing open (the queue's bypass flag).
func TestQueueWithoutListener(t *testing.T) {
	x := newTopo(t)
	echo(t, x.peer, ":80")
	p := &policy.Policy{Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}}}

	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 9})
	_, _, err := connect(x.pod, ap(x.peerAddr, 80), 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("fail-closed connect without a listener: %v, want a timeout", err)
	}

	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 9, FailOpen: true})
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
}

// verdicts is a tiny verdict loop on the sidecar's nfq package: it allows destination ports 80 and
// 82 (the original port, for inbound), denies the rest, and records what it saw.
type verdicts struct {
	queued atomic.Int32
	mu     sync.Mutex
	marks  []uint32 // packet marks of queued inbound packets
	hold   chan struct{}
	held   chan struct{}
}

func (v *verdicts) handle(p nfq.Packet) nfq.Reply {
	v.queued.Add(1)
	pkt, err := packet.Parse(p.Payload)
	if err != nil {
		return nfq.Reply{Action: nfqueue.NfRepeat, Mark: MarkDeny}
	}
	port := pkt.Dst.Port()
	if p.OutDev == 0 && p.InDev != loIndex { // inbound: the original port is in the mark
		v.mu.Lock()
		v.marks = append(v.marks, p.Mark)
		v.mu.Unlock()
		port = uint16(p.Mark & MarkPortMask)
	}
	if port == 82 && v.hold != nil {
		v.held <- struct{}{}
		<-v.hold
	}
	if port == 80 || port == 82 {
		return nfq.Reply{Action: nfqueue.NfRepeat, Mark: MarkAllow}
	}
	return nfq.Reply{Action: nfqueue.NfRepeat, Mark: MarkDeny}
}

func (v *verdicts) serve(t *testing.T, ns *netnstest.NS, queue uint16) {
	serveQueue(t, ns, queue, v.handle)
}

// serveQueue runs a verdict loop with handler h on queue in ns until the test ends.
func serveQueue(t *testing.T, ns *netnstest.NS, queue uint16, h nfq.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	loop, err := nfq.Bind(nfq.Options{NetNS: ns.Fd(), QueueNum: queue}, h, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { loop.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestVerdictMarks runs the queue path with a real verdict loop: an NF_REPEAT with MarkAllow accepts
// and remembers the key for SeenTimeout (the repeat connection is not queued again until then),
// MarkDeny refuses fast, an inbound connection redirected by a mesh proxy is queued with its original
// port in the mark and remembered under that port, and loopback deny ports are queued too.
func TestVerdictMarks(t *testing.T) {
	x := newTopo(t)
	for _, port := range []string{":80", ":81"} {
		echo(t, x.peer, port)
	}
	for _, addr := range []string{":8080", "127.0.0.1:82", "127.0.0.1:15000", "127.0.0.1:15001"} {
		echo(t, x.pod, addr)
	}
	// The pod's "mesh proxy" redirects inbound port 80 to 8080, as Istio redirects to 15006.
	x.pod.Exec(t, "nft", "add table ip mesh; add chain ip mesh pre { type nat hook prerouting priority dstnat; };"+
		" add rule ip mesh pre tcp dport 80 redirect to :8080")
	v := &verdicts{}
	v.serve(t, x.pod, 3)
	p := &policy.Policy{Mode: policy.Protect, Loopback: []policy.LoopbackRule{{ID: "admin", Origin: policy.OriginUser,
		Action: policy.ActionDeny, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 82}, {Protocol: policy.TCP, Port: 15000}}}}}
	const seenTimeout = 300 * time.Millisecond
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 3, SeenTimeout: seenTimeout})

	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	if n := v.queued.Load(); n != 1 {
		t.Errorf("%d packets queued for two connections to an allowed key, want 1", n)
	}
	wantRefused(t, x.pod, ap(x.peerAddr, 81))

	wantConnect(t, x.peer, ap(x.podAddr, 80))
	v.mu.Lock()
	marks := v.marks
	v.mu.Unlock()
	if len(marks) != 1 || marks[0] != 80 {
		t.Errorf("inbound packet marks %v, want [80] (the original port)", marks)
	}
	_, sets := readBack(t, x.pod, x.c)
	for name, want := range map[string]string{SetSeenEgress4: x.peerAddr.String() + " . 6 . 80",
		SetSeenIngress4: x.peerAddr.String() + " . 6 . 80"} {
		if len(sets[name]) != 1 || sets[name][0] != want {
			t.Errorf("set %s = %v, want [%s]", name, sets[name], want)
		}
	}

	// Loopback: a deny port is queued and answered either way; other ports pass unqueued.
	lo := netip.MustParseAddr("127.0.0.1")
	before := v.queued.Load()
	wantConnect(t, x.pod, ap(lo, 82))
	wantRefused(t, x.pod, ap(lo, 15000))
	wantConnect(t, x.pod, ap(lo, 15001))
	if n := v.queued.Load() - before; n != 2 {
		t.Errorf("%d loopback packets queued, want 2 (the deny ports)", n)
	}

	// Once the seen key expires, the next connection is queued (and logged) again.
	testutil.Eventually(t, 10*seenTimeout, func() error {
		if _, sets := readBack(t, x.pod, x.c); len(sets[SetSeenEgress4]) != 0 {
			return fmt.Errorf("seen key still there after its %s timeout", seenTimeout)
		}
		return nil
	})
	before = v.queued.Load()
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	if n := v.queued.Load() - before; n != 1 {
		t.Errorf("%d packets queued after the seen key expired, want 1", n)
	}
}

// TestQueuedSurvivesReapply: a packet waiting for its verdict while the ruleset is replaced is not
// lost: the base chains stay registered, so its connection completes without a SYN retransmit (1 s).
func TestQueuedSurvivesReapply(t *testing.T) {
	x := newTopo(t)
	echo(t, x.peer, ":82")
	v := &verdicts{hold: make(chan struct{}), held: make(chan struct{})}
	v.serve(t, x.pod, 4)
	o := Options{Queue: QueueCompat, QueueNum: 4}
	apply(t, x.c, nil, o)
	type result struct {
		err  error
		took time.Duration
	}
	res := make(chan result, 1)
	go func() {
		_, took, err := connect(x.pod, ap(x.peerAddr, 82), 3*time.Second)
		res <- result{err, took}
	}()
	<-v.held
	apply(t, x.c, samplePolicy(policy.Protect), o)
	close(v.hold)
	r := <-res
	if r.err != nil || r.took > 900*time.Millisecond {
		t.Errorf("connection queued across a re-apply: %v after %s, want a connection without retransmit", r.err, r.took)
	}
}

// TestMeshRedirect: egress is judged before NAT, so a connection that a mesh proxy's outbound
// REDIRECT sends to the local proxy is judged by its real remote.
func TestMeshRedirect(t *testing.T) {
	x := newTopo(t)
	echo(t, x.pod, ":15001") // the proxy
	x.pod.Exec(t, "nft", "add table ip mesh; add chain ip mesh out { type nat hook output priority -100; };"+
		" add rule ip mesh out ip daddr "+x.peerAddr.String()+" tcp dport { 80, 81 } redirect to :15001")
	p := &policy.Policy{Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}}}
	apply(t, x.c, p, Options{Offline: true})
	greeting, _, err := connect(x.pod, ap(x.peerAddr, 80), 2*time.Second)
	if err != nil || greeting != ":15001\n" {
		t.Errorf("redirected connection to an allowed remote: %q, %v; want the proxy's greeting", greeting, err)
	}
	wantRefused(t, x.pod, ap(x.peerAddr, 81))
}

// copies collects what the log group hands on: each copy's destination port (the mark's, for an
// inbound one) and whether it left by an output interface.
type copies struct {
	mu    sync.Mutex
	ports []uint16
	out   []bool
}

func (c *copies) handle(p nflog.Packet) {
	pkt, err := packet.Parse(p.Payload)
	if err != nil {
		return
	}
	port := pkt.Dst.Port()
	if p.OutDev == 0 {
		port = uint16(p.Mark & MarkPortMask)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ports, c.out = append(c.ports, port), append(c.out, p.OutDev != 0)
}

func (c *copies) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ports)
}

// TestAllowLog: with AllowLog, what the allow sets allow is accepted in the kernel and copied to the
// log group QueueNum, each connection (LogAllowsAll) or each key once per SeenTimeout
// (LogAllowsFirst), an inbound one with its original port in the mark; nothing of it is queued, and
// what the sets do not hold is queued and judged as before.
func TestAllowLog(t *testing.T) {
	x := newTopo(t)
	for _, port := range []string{":80", ":81"} {
		echo(t, x.peer, port)
	}
	echo(t, x.pod, ":8080")
	x.pod.Exec(t, "nft", "add table ip mesh; add chain ip mesh pre { type nat hook prerouting priority dstnat; };"+
		" add rule ip mesh pre tcp dport 80 redirect to :8080")
	v := &verdicts{}
	v.serve(t, x.pod, 3)
	c := &copies{}
	l, err := nflog.Open(nflog.Options{NetNS: x.pod.Fd(), Group: 3, CopyLen: nfq.HeadersLen, Batch: 32}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { _ = l.Run() }()
	p := &policy.Policy{Mode: policy.Protect,
		Egress:  []policy.Rule{{ID: "peer", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}},
		Ingress: []policy.Rule{{ID: "peer-in", Origin: policy.OriginUser, CIDRs: host(x.peerAddr), Ports: tcp(80)}}}
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 3, LogAllows: LogAllowsAll, AllowLog: true})

	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	wantConnect(t, x.peer, ap(x.podAddr, 80))
	wantRefused(t, x.pod, ap(x.peerAddr, 81))
	testutil.Eventually(t, 2*time.Second, func() error {
		if n := c.count(); n != 3 {
			return fmt.Errorf("%d copies logged, want 3 (two egress connections, one inbound)", n)
		}
		return nil
	})
	c.mu.Lock()
	if want := []uint16{80, 80, 80}; !slices.Equal(c.ports, want) || !slices.Equal(c.out, []bool{true, true, false}) {
		t.Errorf("copies' ports %v (output %v), want %v (output, output, input with the original port)", c.ports, c.out, want)
	}
	c.mu.Unlock()
	if n := v.queued.Load(); n != 1 {
		t.Errorf("%d packets queued, want 1: the connection to port 81, which no allow set holds", n)
	}

	// LogAllowsFirst: a key is copied once, and is seen until its timeout.
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 3, LogAllows: LogAllowsFirst, AllowLog: true, SeenTimeout: time.Minute})
	before := c.count()
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	wantConnect(t, x.pod, ap(x.peerAddr, 80))
	// An inbound connection after them is a marker: the group hands copies on in order.
	wantConnect(t, x.peer, ap(x.podAddr, 80))
	testutil.Eventually(t, 2*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if got := c.out[before:]; !slices.Equal(got, []bool{true, false}) {
			return fmt.Errorf("copies since (output or not) %v, want one egress copy for two connections to one key, then the inbound one", got)
		}
		return nil
	})
	if _, sets := readBack(t, x.pod, x.c); !slices.Equal(sets[SetSeenEgress4], []string{x.peerAddr.String() + " . 6 . 80"}) {
		t.Errorf("seen egress keys %v, want the logged key", sets[SetSeenEgress4])
	}
	if n := v.queued.Load(); n != 1 {
		t.Errorf("%d packets queued, want still 1", n)
	}
}
