package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/nftables"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/dns/dnsmessage"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/dnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// The names the DNS tests resolve, and the port their FQDN rule allows.
const (
	apiName   = "api.example.test"
	otherName = "other.example.test"
	fqdnPort  = 8443
)

// dnsWorld is a world whose pod resolves through the peer: the test DNS server answers on the peer's
// address, port 53, and a second resolver address of the peer (rogue) is a bare UDP socket the test
// answers from by hand. The pod's resolv.conf names both. The peer has two more addresses (ip1, ip2)
// that names resolve to, and counts the connections it accepts on fqdnPort by the address they reached.
type dnsWorld struct {
	*world
	dns        *dnstest.Server
	rogue      *net.UDPConn
	ip1, ip2   netip.Addr
	resolvConf string

	mu       sync.Mutex
	accepted map[netip.Addr]int
}

func newDNSWorld(t *testing.T) *dnsWorld {
	w := &dnsWorld{world: newWorld(t), accepted: map[netip.Addr]int{}}
	base := w.peerIP.As4()
	host := func(b byte) netip.Addr { a := base; a[3] = b; return netip.AddrFrom4(a) }
	rogue := host(53)
	w.ip1, w.ip2 = host(101), host(102)
	for _, a := range []netip.Addr{rogue, w.ip1, w.ip2} {
		w.peer.Exec(t, "ip", "addr", "add", netip.PrefixFrom(a, 24).String(), "dev", w.peerLink.Name)
	}
	if err := w.peer.Do(func() (err error) {
		if w.dns, err = dnstest.Start(netip.AddrPortFrom(w.peerIP, 53).String()); err != nil {
			return err
		}
		w.rogue, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(rogue, 53)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dns.Close)
	t.Cleanup(func() { w.rogue.Close() })
	l := w.peer.Listen(t, "tcp", fmt.Sprintf(":%d", fqdnPort))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.accepted[c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()]++
			w.mu.Unlock()
			c.Close()
		}
	}()
	w.resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	conf := fmt.Sprintf("search svc.cluster.test\nnameserver %s\nnameserver %s\noptions ndots:1\n", w.peerIP, rogue)
	if err := os.WriteFile(w.resolvConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// fqdnPolicy allows DNS to the pod's two resolvers, as policygen's cluster-DNS rule does, and TCP
// fqdnPort to the names patterns match, in mode.
func (w *dnsWorld) fqdnPolicy(mode policy.Mode, rev int64, restrictDNS bool, patterns ...string) *policy.Policy {
	p := &policy.Policy{Namespace: "shop", Workload: "Deployment/web", Revision: rev, Mode: mode, RestrictDNS: restrictDNS,
		Egress: []policy.Rule{{ID: "cluster-dns", Origin: policy.OriginManifest, Peer: "service:kube-system/kube-dns",
			CIDRs: []netip.Prefix{netip.PrefixFrom(w.peerIP, 32), netip.PrefixFrom(mustAddr(w.rogue), 32)},
			Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Port: 53}}}}}
	if len(patterns) > 0 {
		p.Egress = append(p.Egress, policy.Rule{ID: "api-by-name", Origin: policy.OriginUser, Peer: policy.NamePeer(patterns[0]),
			Names: patterns, Ports: []policy.PortRange{{Protocol: policy.TCP, Port: fqdnPort}}})
	}
	return p
}

// start runs the agent with the pod's resolv.conf, after tune.
func (w *dnsWorld) start(t *testing.T, p *policy.Policy, tune func(*Options)) (*Agent, func()) {
	t.Helper()
	w.write(t, p)
	return w.world.start(t, func(o *Options) {
		o.DNS.ResolvConf = w.resolvConf
		if tune != nil {
			tune(o)
		}
	})
}

// resolve looks name up from the pod with Go's own resolver, through the test DNS server.
func (w *dnsWorld) resolve(name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return w.pod.Dial(network, w.dns.Addr().String(), 2*time.Second)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return r.LookupNetIP(ctx, "ip4", name+".")
}

// connect resolves name from the pod and connects, once, to its first address on fqdnPort.
func (w *dnsWorld) connect(t *testing.T, name string) (netip.Addr, error) {
	t.Helper()
	addrs, err := w.resolve(name)
	if err != nil {
		t.Fatalf("resolve %s: %v", name, err)
	}
	_, err = w.dial(netip.AddrPortFrom(addrs[0], fqdnPort))
	return addrs[0], err
}

// acceptedAt is how many connections the peer accepted on fqdnPort at addr.
func (w *dnsWorld) acceptedAt(addr netip.Addr) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.accepted[addr]
}

// mustAccept asserts that the peer accepted a connection at addr (it counts it after the pod's dial
// returns, so this polls).
func (w *dnsWorld) mustAccept(t *testing.T, addr netip.Addr, n int) {
	t.Helper()
	testutil.Await(t, fmt.Sprintf("the peer accepting connection %d at %s", n, addr), 2*time.Second, func() error {
		if got := w.acceptedAt(addr); got != n {
			return fmt.Errorf("accepted %d", got)
		}
		return nil
	})
}

func answers(a *Agent, result string) float64 { return promtest.ToFloat64(a.dns.answers[result]) }

// TestFQDNRuleAllowsOnFirstTry: an app that resolves a name an FQDN rule allows connects on its very
// first attempt (the answer's address is in force before the app has it), the peer accepts it, and the
// allow line names the name. A name no rule allows resolves, but its connection is refused, with the
// name in the deny line, and never reaches the peer.
func TestFQDNRuleAllowsOnFirstTry(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	w.dns.Set(otherName, 300, w.ip2)
	// log-allows first: the kernel's seen sets are in use, as in production.
	a, stop := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), func(o *Options) { o.Log.Allows = verdictlog.AllowsFirst })

	addr, err := w.connect(t, apiName)
	if err != nil || addr != w.ip1 {
		t.Fatalf("first connection to %s (%s): %v", apiName, addr, err)
	}
	w.mustAccept(t, w.ip1, 1)
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Dst: netip.AddrPortFrom(w.ip1, fqdnPort), DstName: apiName, Rule: "api-by-name"})
	if _, err := w.connect(t, apiName); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	w.mustAccept(t, w.ip1, 2)

	w.mustRefuseFast(t, netip.AddrPortFrom(w.ip1, 80)) // the rule's port only
	if addr, err := w.connect(t, otherName); !errors.Is(err, syscall.ECONNREFUSED) || addr != w.ip2 {
		t.Fatalf("connection to %s (%s): %v, want refused", otherName, addr, err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Dst: netip.AddrPortFrom(w.ip2, fqdnPort), DstName: otherName, Rule: "default"})
	if n := w.acceptedAt(w.ip2); n != 0 {
		t.Fatalf("the peer accepted %d connections for %s", n, otherName)
	}
	if got := answers(a, answerLearned); got < 2 {
		t.Fatalf("answers learned = %v, want at least 2", got)
	}

	// Fail-closed, the sidecar gone: the kernel keeps allowing the resolved name until its TTL.
	stop()
	if _, err := w.dial(netip.AddrPortFrom(w.ip1, fqdnPort)); err != nil {
		t.Fatalf("connection to %s's address with the sidecar gone: %v", apiName, err)
	}
	w.mustAccept(t, w.ip1, 3)
	w.mustRefuseFast(t, netip.AddrPortFrom(w.ip2, fqdnPort))
}

// TestFQDNExpiryAndRotation: once a name's answer expires, new connections to its address are refused
// (the kernel's FQDN element times out, the seen key is forgotten, the decider has no name for it); a
// name answered with a new address is followed there.
func TestFQDNExpiryAndRotation(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 1, w.ip1)
	w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), func(o *Options) {
		o.Log.Allows = verdictlog.AllowsFirst
		o.DNS.MinTTL, o.DNS.MaxTTL = time.Second, time.Minute
	})
	if _, err := w.connect(t, apiName); err != nil {
		t.Fatalf("connection within the TTL: %v", err)
	}
	w.mustAccept(t, w.ip1, 1)
	target := netip.AddrPortFrom(w.ip1, fqdnPort)
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, err := w.dial(target); !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connection to %s after the TTL: %v, want refused", target, err)
		}
		return nil
	})
	before := w.acceptedAt(w.ip1)
	w.mustRefuseFast(t, target)
	if after := w.acceptedAt(w.ip1); after != before {
		t.Fatalf("the peer accepted a connection after the TTL (%d, then %d)", before, after)
	}

	// Rotation: the name moves to ip2 and is followed there.
	w.dns.Set(apiName, 300, w.ip2)
	addr, err := w.connect(t, apiName)
	if err != nil || addr != w.ip2 {
		t.Fatalf("connection after the rotation (%s): %v", addr, err)
	}
	w.mustAccept(t, w.ip2, 1)
}

// TestLearnReportsTheName: in Learn, a connection to an address the pod resolved is reported with the
// name it asked for.
func TestLearnReportsTheName(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.SetCNAME(apiName, "edge.cdn.test", 300)
	w.dns.Set("edge.cdn.test", 300, w.ip1)
	a, _ := w.start(t, w.fqdnPolicy(policy.Learn, 1, false), nil)
	if _, err := w.connect(t, apiName); err != nil {
		t.Fatalf("connection in Learn: %v", err)
	}
	w.mustAccept(t, w.ip1, 1)
	if _, err := w.dial(w.peerAddr(80)); err != nil { // no name: reported without one
		t.Fatal(err)
	}
	var got []policy.ReportEntry
	testutil.Eventually(t, 2*time.Second, func() error {
		got = append(got, a.dp.reports.Drain()...)
		for _, e := range got {
			if e.Direction == policy.Egress && e.Peer == w.ip1 && e.Port == fqdnPort {
				return nil
			}
		}
		return fmt.Errorf("no egress entry for %s:%d in %+v", w.ip1, fqdnPort, got)
	})
	for _, e := range got {
		switch {
		case e.Direction != policy.Egress:
		case e.Peer == w.ip1 && e.Name != apiName:
			t.Errorf("entry %+v: want the name asked for, %s", e, apiName)
		case e.Peer == w.peerIP && e.Name != "":
			t.Errorf("entry %+v: want no name, none was resolved", e)
		}
	}
}

// TestRestrictDNSRefusesTheQuery: in Protect with RestrictDNS, a query for a name no rule allows is
// refused at once, never reaches the resolver, and is logged with its name; a name a rule allows, and
// one under a search domain, are asked.
func TestRestrictDNSRefusesTheQuery(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	w.dns.Set(otherName, 300, w.ip2)
	w.dns.Set("db.svc.cluster.test", 300, w.ip2)
	w.start(t, w.fqdnPolicy(policy.Protect, 1, true, "*.example.test"), nil)
	before := w.dns.Queries()
	start := time.Now()
	_, err := w.resolve("evil.exfil.test")
	if err == nil {
		t.Fatal("a query for a name no rule allows was answered")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the refused query failed after %v, want at once", took)
	}
	if n := w.dns.Queries(); n != before {
		t.Fatalf("the resolver got %d queries, want none", n-before)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Evaluator: "dns-query", DstName: "evil.exfil.test", Rule: "default",
		Dst: w.dns.Addr()})
	for _, name := range []string{apiName, "db.svc.cluster.test"} {
		if _, err := w.resolve(name); err != nil {
			t.Fatalf("resolve %s: %v", name, err)
		}
	}
	if n := w.dns.Queries(); n != before+2 {
		t.Fatalf("the resolver got %d queries, want the 2 allowed ones", n-before)
	}
}

// TestUnsolicitedAnswerIsDropped: a UDP answer the pod did not ask for, sent from a resolver's address
// to a pod socket, is dropped (the socket gets nothing), counted, and teaches nothing.
func TestUnsolicitedAnswerIsDropped(t *testing.T) {
	w := newDNSWorld(t)
	a, _ := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), nil)
	var sock *net.UDPConn
	if err := w.pod.Do(func() (err error) { sock, err = net.ListenUDP("udp", &net.UDPAddr{Port: 40053}); return err }); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	forged := answerMsg(t, 7, apiName, w.ip1)
	to := netip.AddrPortFrom(w.podIP, 40053)
	for range 3 {
		if _, err := w.rogue.WriteToUDPAddrPort(forged, to); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Await(t, "3 unsolicited answers counted", 2*time.Second, func() error {
		// The kernel drops a UDP answer no query awaits, before the DNS queue.
		if got := a.kernelCounter(ruleset.CounterDNSUnsolicited)(); got != 3 {
			return fmt.Errorf("podwall_dns_udp_unsolicited_total = %v", got)
		}
		return nil
	})
	sock.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := sock.ReadFromUDPAddrPort(make([]byte, 512)); err == nil {
		t.Fatalf("the pod's socket received %d bytes of an unsolicited answer", n)
	}
	if names, addrs := a.dp.names.Len(); names+addrs != 0 {
		t.Fatalf("the cache learned %d names, %d addresses from it", names, addrs)
	}
	w.mustRefuseFast(t, netip.AddrPortFrom(w.ip1, fqdnPort))
}

// TestMalformedAnswerLearnsNothing: answers the sidecar cannot read, from a resolver the pod asked,
// reach the app as they were sent (its resolver library judges them), teach nothing, and leave the
// loop working.
func TestMalformedAnswerLearnsNothing(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip2)
	a, _ := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), nil)
	good := answerMsg(t, 9, apiName, w.ip1)
	bad := [][]byte{
		good[:len(good)-2], // the address cut short
		append(slices.Clone(good[:12]), 0xc0, 0x0c, 0xc0, 0x0c), // a name pointing at itself
		{0x00, 0x09, 0x80},
		append(append([]byte{}, good[:5]...), 0xff), // qdcount 0xff..: more questions than bytes
	}
	var sock *net.UDPConn
	if err := w.pod.Do(func() (err error) {
		sock, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(mustAddr(w.rogue), 53)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	query := queryMsg(t, 9, apiName)
	for i, reply := range bad {
		if _, err := sock.Write(query); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, from, err := w.rogue.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != string(query) {
			t.Fatalf("the resolver got %q, %v", buf[:n], err)
		}
		if _, err := w.rogue.WriteToUDPAddrPort(reply, from); err != nil {
			t.Fatal(err)
		}
		sock.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err = sock.Read(buf)
		if err != nil || string(buf[:n]) != string(reply) {
			t.Fatalf("reply %d: the app got %q, %v; want the resolver's bytes %q", i, buf[:n], err, reply)
		}
	}
	// The kernel released the answers as it logged them: the sidecar reads them as they come.
	testutil.Await(t, "the malformed answers counted", 2*time.Second, func() error {
		if got := answers(a, answerMalformed); got != float64(len(bad)) {
			return fmt.Errorf("malformed answers = %v, want %d", got, len(bad))
		}
		return nil
	})
	if names, addrs := a.dp.names.Len(); names+addrs != 0 {
		t.Fatalf("the cache learned %d names, %d addresses", names, addrs)
	}
	w.mustRefuseFast(t, netip.AddrPortFrom(w.ip1, fqdnPort))
	// The loop still works: a good answer from the real resolver allows its address.
	if addr, err := w.connect(t, apiName); err != nil || addr != w.ip2 {
		t.Fatalf("connection after the malformed answers (%s): %v", addr, err)
	}
	w.mustAccept(t, w.ip2, 1)
}

// mustAddr is the address c is bound to.
func mustAddr(c *net.UDPConn) netip.Addr {
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

// queryMsg is a DNS query for name's A record.
func queryMsg(t *testing.T, id uint16, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// answerMsg is a DNS answer to queryMsg(id, name) giving addr.
func answerMsg(t *testing.T, id uint16, name string, addr netip.Addr) []byte {
	t.Helper()
	n := dnsmessage.MustNewName(name + ".")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RecursionDesired: true, RecursionAvailable: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	if err := b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 300}, dnsmessage.AResource{A: addr.As4()}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestPolicyChangeJudgesWithNames: a policy change in Protect judges the pod's established connections
// again with the names their addresses were resolved from: one a rule by name still allows carries on,
// and once the rule goes it is cut, with its name on the revoked line.
func TestPolicyChangeJudgesWithNames(t *testing.T) {
	const echoPort = 9443
	w := newDNSWorld(t)
	l := w.peer.Listen(t, "tcp", fmt.Sprintf(":%d", echoPort))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	w.dns.Set(apiName, 300, w.ip1)
	byName := func(rev int64, withRule bool) *policy.Policy {
		p := w.fqdnPolicy(policy.Protect, rev, false)
		if withRule {
			p = w.fqdnPolicy(policy.Protect, rev, false, apiName)
			p.Egress[1].Ports = append(p.Egress[1].Ports, policy.PortRange{Protocol: policy.TCP, Port: echoPort})
		}
		return p
	}
	a, _ := w.start(t, byName(1, true), nil)
	addrs, err := w.resolve(apiName)
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.pod.Dial("tcp", netip.AddrPortFrom(addrs[0], echoPort).String(), 2*time.Second)
	if err != nil {
		t.Fatalf("connection by name: %v", err)
	}
	defer c.Close()
	echo := func() error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(byName(2, true)); err != nil {
		t.Fatal(err)
	}
	if err := echo(); err != nil {
		t.Fatalf("after a change that still allows the name: %v", err)
	}
	if err := a.Apply(byName(3, false)); err != nil {
		t.Fatal(err)
	}
	if err := echo(); err == nil {
		t.Fatal("the connection carries on after its rule by name went")
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Revoked, Dst: netip.AddrPortFrom(w.ip1, echoPort), DstName: apiName, PolicyRevision: 3})
}

// TestAnswerOverTCP: an answer too large for UDP comes truncated and the app's resolver asks again over
// TCP. An answer that fits one TCP segment is learned like any other; one cut across segments reaches
// the app whole but teaches nothing (counted as truncated), so its addresses stay refused.
func TestAnswerOverTCP(t *testing.T) {
	w := newDNSWorld(t)
	a, _ := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName, otherName), nil)
	for _, tc := range []struct {
		name    string
		addrs   int // 16 bytes each: 80 fit one segment (and not Go's 1232-byte EDNS0 size), 150 do not
		learned bool
	}{{otherName, 150, false}, {apiName, 80, true}} {
		target := w.ip2
		if tc.learned {
			target = w.ip1
		}
		addrs := []netip.Addr{target}
		for i := range tc.addrs - 1 {
			addrs = append(addrs, netip.AddrFrom4([4]byte{198, 18, byte(tc.addrs), byte(i)}))
		}
		w.dns.Set(tc.name, 300, addrs...)
		var networks []string
		var mu sync.Mutex
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			mu.Lock()
			networks = append(networks, network)
			mu.Unlock()
			return w.pod.Dial(network, w.dns.Addr().String(), 2*time.Second)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		got, err := r.LookupNetIP(ctx, "ip4", tc.name+".")
		cancel()
		if err != nil || len(got) != tc.addrs || !slices.Contains(got, target) {
			t.Fatalf("resolve %s: %d addresses, %v", tc.name, len(got), err)
		}
		mu.Lock()
		asked := slices.Clone(networks)
		mu.Unlock()
		if !slices.Contains(asked, "tcp") {
			t.Fatalf("the resolver asked over %v, want TCP after a truncated UDP answer", asked)
		}
		_, err = w.dial(netip.AddrPortFrom(target, fqdnPort))
		switch {
		case tc.learned && err != nil:
			t.Fatalf("connection to an address of the TCP answer: %v", err)
		case !tc.learned && !errors.Is(err, syscall.ECONNREFUSED):
			t.Fatalf("connection to an address of a cut TCP answer: %v, want refused", err)
		}
	}
	w.mustAccept(t, w.ip1, 1)
	if n := w.acceptedAt(w.ip2); n != 0 {
		t.Fatalf("the peer accepted %d connections to the cut answer's address", n)
	}
	if got := answers(a, answerTruncated); got < 1 {
		t.Fatalf("truncated answers = %v, want the cut one counted", got)
	}
}

// TestCapRefusesNewAddresses: past dns-max-addrs an answer teaches nothing more: the addresses held
// stay allowed, a new one is refused, and the refusal is counted and logged.
func TestCapRefusesNewAddresses(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	w.dns.Set(otherName, 300, w.ip2)
	logged := &testutil.Buffer{}
	w.log = funcr.New(func(prefix, args string) { fmt.Fprintln(logged, prefix, args) }, funcr.Options{})
	a, _ := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, "*.example.test"), func(o *Options) { o.DNS.MaxAddrs = 1 })
	if _, err := w.connect(t, apiName); err != nil {
		t.Fatalf("first name: %v", err)
	}
	if addr, err := w.connect(t, otherName); !errors.Is(err, syscall.ECONNREFUSED) || addr != w.ip2 {
		t.Fatalf("a name past the cap (%s): %v, want refused", addr, err)
	}
	if _, err := w.connect(t, apiName); err != nil {
		t.Fatalf("the name held: %v", err)
	}
	w.mustAccept(t, w.ip1, 2)
	if n := w.acceptedAt(w.ip2); n != 0 {
		t.Fatalf("the peer accepted %d connections past the cap", n)
	}
	if got := answers(a, answerRefusedCap); got != 1 {
		t.Fatalf("refused_cap = %v, want 1", got)
	}
	if !strings.Contains(logged.String(), "raise dns-max-names or dns-max-addrs") {
		t.Fatalf("no log line says the cache is full:\n%s", logged)
	}
}

// TestQueryFlowJudgedAsConnection: a query goes out only on a flow the policy allows, as any
// connection: with no rule for DNS, Protect refuses it at once with a deny line for the resolver, and
// the resolver never receives it.
func TestQueryFlowJudgedAsConnection(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	p := w.fqdnPolicy(policy.Protect, 1, false, apiName)
	p.Egress = p.Egress[1:] // no cluster-DNS rule
	w.start(t, p, nil)
	start := time.Now()
	if _, err := w.resolve(apiName); err == nil {
		t.Fatal("a query on a flow no rule allows was answered")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the refused query failed after %v, want at once", took)
	}
	if n := w.dns.Queries(); n != 0 {
		t.Fatalf("the resolver got %d queries", n)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Dst: w.dns.Addr(), Rule: "default", Evaluator: "default"})
}

// TestQueryFlowAllowLine: under Protect, the pod's query to its resolver is a connection like any
// other: its line names the rule that allows the resolver.
func TestQueryFlowAllowLine(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), nil)
	if _, err := w.resolve(apiName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Direction: policy.Egress, Proto: syscall.IPPROTO_UDP, Dst: w.dns.Addr(),
		Rule: "cluster-dns", Mode: policy.Protect})
}

// TestFQDNInKernelUnderLogAllowsNone: with log-allows none the kernel decides allowed connections
// alone, from the FQDN sets, so an answer's address is in the FQDN set (the hash set: the rule names
// one port) by the time the app has the answer, and the app's first connection is accepted.
func TestFQDNInKernelUnderLogAllowsNone(t *testing.T) {
	w := newDNSWorld(t)
	w.dns.Set(apiName, 300, w.ip1)
	a, _ := w.start(t, w.fqdnPolicy(policy.Protect, 1, false, apiName), func(o *Options) { o.Log.Allows = verdictlog.AllowsNone })
	if addr, err := w.connect(t, apiName); err != nil || addr != w.ip1 {
		t.Fatalf("first connection to %s (%s): %v", apiName, addr, err)
	}
	w.mustAccept(t, w.ip1, 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	set := &nftables.Set{Table: &nftables.Table{Name: ruleset.TableName, Family: nftables.TableFamilyINet},
		Name: ruleset.SetFQDNEgress4Exact, KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
	elems, err := a.nft.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	ip := w.ip1.As4()
	want := append(ip[:], syscall.IPPROTO_TCP, 0, 0, 0, byte(fqdnPort>>8), byte(fqdnPort&0xff), 0, 0)
	if len(elems) != 1 || string(elems[0].Key) != string(want) {
		t.Fatalf("set %s holds %v, want the one key %s . tcp . %d", set.Name, elems, w.ip1, fqdnPort)
	}
}
