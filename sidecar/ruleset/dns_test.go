package ruleset

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/florianl/go-nfqueue/v2"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/ruleset/marktest"
)

// dnsLoop is a tiny DNS verdict loop: it records each queued packet as "query <payload>" or
// "answer <payload>", refuses queries starting with "deny" (NF_REPEAT with MarkDeny), drops answers
// starting with "drop" and releases the rest (queries with NF_REPEAT and MarkAllow, as the agent
// does, answers with NF_ACCEPT). newFlow lists the queries that came with MarkNewFlow.
type dnsLoop struct {
	mu      sync.Mutex
	seen    []string
	newFlow []string
}

func (d *dnsLoop) handle(p nfq.Packet) nfq.Reply {
	payload := string(l4Payload(p.Payload))
	kind := "answer"
	if p.OutDev != 0 {
		kind = "query"
	}
	d.mu.Lock()
	d.seen = append(d.seen, kind+" "+payload)
	if kind == "query" && p.Mark&MarkMask == MarkNewFlow {
		d.newFlow = append(d.newFlow, payload)
	}
	d.mu.Unlock()
	switch {
	case kind == "query" && strings.HasPrefix(payload, "deny"):
		return nfq.Reply{Action: nfqueue.NfRepeat, Mark: MarkDeny}
	case kind == "answer" && strings.HasPrefix(payload, "drop"):
		return nfq.Reply{Action: nfqueue.NfDrop}
	case kind == "query":
		return nfq.Reply{Action: nfqueue.NfRepeat, Mark: MarkAllow}
	}
	return nfq.Reply{Action: nfqueue.NfAccept}
}

// count returns how often the loop saw entry.
func (d *dnsLoop) count(entry string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.seen {
		if s == entry {
			n++
		}
	}
	return n
}

func (d *dnsLoop) all() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seen)
}

// wantSeen waits until the loop has seen each entry exactly once.
func (d *dnsLoop) wantSeen(t *testing.T, entries ...string) {
	t.Helper()
	testutil.Eventually(t, 2*time.Second, func() error {
		for _, e := range entries {
			if n := d.count(e); n != 1 {
				return fmt.Errorf("DNS queue saw %q %d times, want once (saw %q)", e, n, d.all())
			}
		}
		return nil
	})
}

// l4Payload returns what a queued IPv4 or IPv6 (without extension headers) UDP or TCP packet carries.
func l4Payload(b []byte) []byte {
	var off int
	var proto byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		off, proto = int(b[0]&0x0f)*4, b[9]
	case len(b) >= 40 && b[0]>>4 == 6:
		off, proto = 40, b[6]
	default:
		return nil
	}
	switch {
	case proto == 17 && len(b) >= off+8:
		return b[off+8:]
	case proto == 6 && len(b) >= off+20:
		return b[off+int(b[off+12]>>4)*4:]
	}
	return nil
}

// udpServer answers each datagram on addr in ns with the datagram itself, but those starting with
// "hold" (answered by release), and records what it got.
type udpServer struct {
	pc   net.PacketConn
	mu   sync.Mutex
	got  []string
	last net.Addr
	held []string
}

func serveUDP(t *testing.T, ns *netnstest.NS, addr string) *udpServer {
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpServer{pc: pc}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			s.mu.Lock()
			s.got, s.last = append(s.got, msg), from
			hold := strings.HasPrefix(msg, "hold")
			if hold {
				s.held = append(s.held, msg)
			}
			s.mu.Unlock()
			if !hold {
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}
	}()
	return s
}

// send sends msg to where the last datagram came from, as if answering it.
func (s *udpServer) send(t *testing.T, msg string) {
	t.Helper()
	s.mu.Lock()
	to := s.last
	s.mu.Unlock()
	if _, err := s.pc.WriteTo([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
}

// release answers the held datagrams.
func (s *udpServer) release(t *testing.T) {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, m := range held {
		s.send(t, m)
	}
}

func (s *udpServer) received(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.got, msg)
}

// ask sends msg on c and returns the answer.
func ask(c net.Conn, msg string, timeout time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestDNSQueue: queries to the pod's resolvers and their answers, UDP and TCP, IPv4 and IPv6, reach the
// DNS queue once each, before the established accept; a query the loop refuses (NF_REPEAT with
// MarkDeny) fails at once and never reaches the resolver; an answer it drops never reaches the app;
// a query that opens its flow comes with MarkNewFlow, the others (and TCP's, whose flow the SYN opened)
// without; TCP segments without data are not queued; the sidecar's own lookups (MarkSelf) are not queued; and
// an "answer" an app holding CAP_NET_RAW forges over loopback, with the resolver's source address, is
// delivered like any loopback datagram but never queued to the DNS queue.
func TestDNSQueue(t *testing.T) {
	x := newTopo(t)
	server := serveUDP(t, x.peer, "[::]:53")
	echo(t, x.peer, "[::]:53")
	d := &dnsLoop{}
	serveQueue(t, x.pod, 11, d.handle)
	v := &verdicts{}
	v.serve(t, x.pod, 12)
	resolvers := []netip.AddrPort{ap(x.peerAddr, 53), ap(x.peerV6, 53)}
	var self []Dest
	for _, r := range resolvers {
		self = append(self, Dest{Proto: policy.UDP, Addr: r}, Dest{Proto: policy.TCP, Addr: r})
	}
	// RestrictDNS: every query is queued, to be judged by its name.
	p := &policy.Policy{Mode: policy.Protect, RestrictDNS: true, Egress: []policy.Rule{{ID: "dns", Origin: policy.OriginUser,
		CIDRs: append(host(x.peerAddr), host(x.peerV6)...), Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Port: 53}}}}}
	apply(t, x.c, p, Options{Queue: QueueCompat, QueueNum: 12, LogAllows: LogAllowsNone, DNSQueue: 11, DNSServers: resolvers, SelfDests: self})
	x.waitDAD(t)

	for i, r := range resolvers {
		c, err := x.pod.Dial("udp", r.String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		q := fmt.Sprintf("q-udp-%d", i)
		if got, err := ask(c, q, 2*time.Second); err != nil || got != q {
			t.Errorf("query %s to %s: %q, %v; want the answer", q, r, got, err)
		}
		d.wantSeen(t, "query "+q, "answer "+q)

		// On the same (established) flow: a refused query fails at once and is queued once.
		deny := fmt.Sprintf("deny-%d", i)
		start := time.Now()
		got, err := ask(c, deny, 2*time.Second)
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() || time.Since(start) > fastRefusal {
			t.Errorf("refused query to %s: %q, %v after %s; want an error at once", r, got, err, time.Since(start))
		}
		d.wantSeen(t, "query "+deny)
		if server.received(deny) {
			t.Errorf("resolver %s received the refused query", r)
		}

		// A dropped answer never reaches the app.
		drop := fmt.Sprintf("drop-%d", i)
		if got, err := ask(c, drop, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dropped answer from %s: %q, %v; want a timeout", r, got, err)
		}
		d.wantSeen(t, "query "+drop, "answer "+drop)
	}

	// TCP: the handshake is no DNS; the greeting (an answer) and each query and its answer are.
	for i, r := range resolvers {
		c, err := x.pod.Dial("tcp", r.String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		greeting := "[::]:53\n"
		q := fmt.Sprintf("q-tcp-%d", i)
		if got, err := ask(c, q, 2*time.Second); err != nil || !strings.HasPrefix(greeting+q, got) {
			t.Errorf("query %s to %s over TCP: %q, %v", q, r, got, err)
		}
		d.wantSeen(t, "query "+q)
	}
	testutil.Eventually(t, 2*time.Second, func() error {
		if n := d.count("answer [::]:53\n"); n != 2 {
			return fmt.Errorf("DNS queue saw %d TCP greetings, want 2", n)
		}
		return nil
	})
	if n := d.count("query ") + d.count("answer "); n != 0 {
		t.Errorf("DNS queue saw %d packets without data (TCP handshake or ACKs), want 0", n)
	}
	d.mu.Lock()
	if want := []string{"q-udp-0", "q-udp-1"}; !slices.Equal(d.newFlow, want) {
		t.Errorf("queries queued with MarkNewFlow: %q, want %q (each UDP flow's first; not the later ones, not TCP's)", d.newFlow, want)
	}
	d.mu.Unlock()

	// The sidecar's own lookup passes unqueued, both ways.
	err := x.pod.Do(func() error {
		dl := net.Dialer{Timeout: time.Second, Control: marktest.Control(MarkSelf)}
		c, err := dl.Dial("udp", resolvers[0].String())
		if err != nil {
			return err
		}
		defer c.Close()
		if got, err := ask(c, "self", 2*time.Second); err != nil || got != "self" {
			return fmt.Errorf("the sidecar's own lookup: %q, %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if n := d.count("query self") + d.count("answer self"); n != 0 {
		t.Errorf("the sidecar's own lookup was queued %d times, want 0", n)
	}

	// The forged answer: over loopback, from the resolver's address and port to the pod's own.
	app := marktest.Count(t, x.pod, "udp", ap(x.podAddr, 5300).String())
	if err := marktest.New(t, x.pod).SendRawUDP(resolvers[0], ap(x.podAddr, 5300), "forged"); err != nil {
		t.Fatalf("forging an answer: %v", err)
	}
	app.WaitReceived(t, 1, "the app's socket")
	if n := d.count("answer forged"); n != 0 {
		t.Errorf("a forged answer over loopback reached the DNS queue %d times, want 0", n)
	}
	if n := v.queued.Load(); n != 0 {
		t.Errorf("%d packets reached the connection queue, want 0 (the policy allows the resolvers)", n)
	}
}

// TestDNSKernelTracking: unless the policy restricts DNS, the kernel tracks UDP queries alone. A
// flow's first query, to a key never seen, is queued (MarkNewFlow) and released by the loop; later
// queries on the flow, and a new flow's first to the now seen key, never reach the queue, yet their
// answers do (the sidecar learns from them). An answer no query awaits (another ID, or a second
// answer to one already answered) is dropped and counted, and the app never reads it. A query in
// flight across an Apply (which turns on RestrictDNS) still gets its answer.
func TestDNSKernelTracking(t *testing.T) {
	x := newTopo(t)
	server := serveUDP(t, x.peer, "[::]:53")
	d := &dnsLoop{}
	serveQueue(t, x.pod, 11, d.handle)
	v := &verdicts{}
	v.serve(t, x.pod, 12)
	resolver := ap(x.peerAddr, 53)
	p := &policy.Policy{Mode: policy.Protect, Egress: []policy.Rule{{ID: "dns", Origin: policy.OriginUser,
		CIDRs: host(x.peerAddr), Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}}}}}
	// AllowLog, as the sidecar runs where the kernel can log: the allow sets then accept in the kernel,
	// but a query that opens its flow is still queued.
	o := Options{Queue: QueueCompat, QueueNum: 12, DNSQueue: 11, DNSServers: []netip.AddrPort{resolver}, AllowLog: true}
	apply(t, x.c, p, o)

	dialResolver := func() net.Conn {
		c, err := x.pod.Dial("udp", resolver.String(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	answered := func(c net.Conn, q string) {
		t.Helper()
		if got, err := ask(c, q, 2*time.Second); err != nil || got != q {
			t.Fatalf("query %s: %q, %v; want its answer", q, got, err)
		}
	}
	c := dialResolver()
	answered(c, "q1-first")
	d.wantSeen(t, "query q1-first", "answer q1-first")
	answered(c, "q2-same-flow")
	answered(dialResolver(), "q3-new-flow")
	d.wantSeen(t, "answer q2-same-flow", "answer q3-new-flow")
	for _, q := range []string{"q2-same-flow", "q3-new-flow"} {
		if n := d.count("query " + q); n != 0 {
			t.Errorf("query %s reached the DNS queue %d times, want 0 (the kernel may release it alone)", q, n)
		}
	}
	d.mu.Lock()
	if want := []string{"q1-first"}; !slices.Equal(d.newFlow, want) {
		t.Errorf("queries queued with MarkNewFlow: %q, want %q", d.newFlow, want)
	}
	d.mu.Unlock()

	// Unsolicited: a datagram from the resolver's address and port to the client's, with an ID no query
	// has, and a second answer to q3, whose answer came already.
	before, err := ReadCounter(x.c, CounterDNSUnsolicited)
	if err != nil {
		t.Fatal(err)
	}
	c3 := dialResolver()
	answered(c3, "q4-answered")
	server.send(t, "zz-forged")
	server.send(t, "q4-answered")
	_ = c3.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c3.Read(make([]byte, 512)); err == nil {
		t.Errorf("the app read %d bytes of an unsolicited answer", n)
	}
	testutil.Eventually(t, 2*time.Second, func() error {
		n, err := ReadCounter(x.c, CounterDNSUnsolicited)
		if err == nil && n-before != 2 {
			err = fmt.Errorf("%s counted %d, want 2", CounterDNSUnsolicited, n-before)
		}
		return err
	})
	if n := d.count("answer zz-forged"); n != 0 || d.count("answer q4-answered") != 1 {
		t.Errorf("the DNS queue saw the unsolicited answers: %q", d.all())
	}

	// Across an Apply: the query awaits its answer while the ruleset is replaced.
	c5 := dialResolver()
	if _, err := c5.Write([]byte("hold-q5")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, func() error {
		if !server.received("hold-q5") {
			return errors.New("the resolver has not received hold-q5")
		}
		return nil
	})
	restricted := *p
	restricted.RestrictDNS = true
	apply(t, x.c, &restricted, o)
	server.release(t)
	_ = c5.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	if n, err := c5.Read(buf); err != nil || string(buf[:n]) != "hold-q5" {
		t.Errorf("the answer to a query sent before an Apply: %q, %v; want it delivered", buf[:n], err)
	}
}

// TestNoDNSRules: without DNS servers, or Offline, the ruleset has no DNS chains or sets and no rule
// costs a packet anything for DNS.
func TestNoDNSRules(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	servers := []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}
	for _, o := range []Options{{Queue: QueueCompat}, {Offline: true, DNSServers: servers}} {
		apply(t, c, nil, o)
		chains, sets := readBack(t, ns, c)
		for _, name := range []string{ChainDNSOutput, ChainDNSQuery, ChainDNSTrack, ChainDNSInput} {
			if _, ok := chains[name]; ok {
				t.Errorf("options %+v: chain %s exists", o, name)
			}
		}
		for _, name := range []string{SetDNSPorts, SetDNSServers4, SetDNSServers6, SetDNSAsked4, SetDNSAsked6} {
			if _, ok := sets[name]; ok {
				t.Errorf("options %+v: set %s exists", o, name)
			}
		}
		if out := listRuleset(t, ns); strings.Contains(out, "dns") {
			t.Errorf("options %+v: DNS in the ruleset:\n%s", o, out)
		}
	}
}

func TestDNSOptions(t *testing.T) {
	servers := []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{QueueNum: 2, QueueCount: 2, DNSQueue: 3, DNSServers: servers}, "DNS queue 3 is one of the connection queues"},
		{Options{DNSServers: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:0")}, DNSQueue: 1}, "want an address and a port"},
		{Options{FQDN: []FQDNAddr{{}}}, "FQDN address invalid"},
	} {
		if _, err := tc.o.withDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options %+v: %v, want an error containing %q", tc.o, err, tc.want)
		}
	}
}
