package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/ruleset/marktest"
	"podwall.io/podwall/sidecar/verdictlog"
)

// The flows of the revocation tests, by the port they are opened to: egress to the peer, ingress to
// the pod.
const (
	egressTCP   = 7100 // cut
	keptTCP     = 7101 // egress, still allowed
	egressUDP   = 7200 // cut
	ingressTCP  = 7300 // cut
	ingressUDP  = 7400 // cut
	loopbackTCP = 7500 // cut by a loopback deny rule
)

// flow is an open connection between the pod and the peer, one socket at each end. UDP flows use
// connected sockets at both ends, so that each end learns of an ICMP refusal as TCP learns of a reset.
type flow struct {
	name    string
	ingress bool // the peer opened it
	// pod and peer are the two ends; for a loopback flow, the pod's client and its server.
	pod, peer net.Conn
	// refusal is what the revoked line must say refused the flow.
	refusal verdict.Line
}

// byDefault is the refusal of a flow that no rule of the new policy allows.
var byDefault = verdict.Line{Rule: "default", Evaluator: "default", Peer: "workload:shop/Deployment/api"}

func (f flow) String() string { return f.name }

// ends are the flow's two ends, named.
func (f flow) ends() []struct {
	name        string
	self, other net.Conn
} {
	return []struct {
		name        string
		self, other net.Conn
	}{{"pod", f.pod, f.peer}, {"peer", f.peer, f.pod}}
}

// line is the flow as a verdict line shows it: who opened it and to where.
func (f flow) line() (src, dst netip.AddrPort) {
	if f.ingress {
		return addrPort(f.peer.LocalAddr()), addrPort(f.pod.LocalAddr())
	}
	return addrPort(f.pod.LocalAddr()), addrPort(f.peer.LocalAddr())
}

func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// revokeWorld is a world whose peer and pod serve the revocation tests' ports.
type revokeWorld struct {
	*world
	peerTCP map[uint16]net.Listener
	podTCP  net.Listener
}

func newRevokeWorld(t *testing.T) *revokeWorld {
	w := &revokeWorld{world: newWorld(t), peerTCP: map[uint16]net.Listener{}}
	for _, port := range []uint16{egressTCP, keptTCP} {
		w.peerTCP[port] = w.peer.Listen(t, "tcp", w.peerAddr(port).String())
	}
	w.podTCP = w.pod.Listen(t, "tcp", netip.AddrPortFrom(w.podIP, ingressTCP).String())
	return w
}

// rules returns a policy allowing egress to the peer on egress and ingress from it on ingress.
func (w *revokeWorld) rules(mode policy.Mode, rev int64, egress, ingress []policy.PortRange) *policy.Policy {
	p := &policy.Policy{Namespace: "shop", Workload: "Deployment/web", Revision: rev, Mode: mode,
		Names: map[netip.Addr]string{w.peerIP: "workload:shop/Deployment/api"}}
	peer := []netip.Prefix{netip.PrefixFrom(w.peerIP, 32)}
	if len(egress) > 0 {
		p.Egress = []policy.Rule{{ID: "api-out", Origin: policy.OriginUser, Peer: "workload:shop/Deployment/api",
			CIDRs: peer, Ports: egress}}
	}
	if len(ingress) > 0 {
		p.Ingress = []policy.Rule{{ID: "api-in", Origin: policy.OriginUser, Peer: "workload:shop/Deployment/api",
			CIDRs: peer, Ports: ingress}}
	}
	return p
}

func tcpPort(p uint16) policy.PortRange { return policy.PortRange{Protocol: policy.TCP, Port: p} }
func udpPort(p uint16) policy.PortRange { return policy.PortRange{Protocol: policy.UDP, Port: p} }

// openTCP opens n connections from the pod to the peer's port (egress), or from the peer to the pod's
// ingressTCP (ingress), and returns them with both ends.
func (w *revokeWorld) openTCP(t *testing.T, name string, n int, port uint16) []flow {
	t.Helper()
	var flows []flow
	for i := range n {
		f := flow{name: fmt.Sprintf("%s-%d", name, i), ingress: port == ingressTCP, refusal: byDefault}
		var l net.Listener
		var err error
		if port == ingressTCP {
			l = w.podTCP
			f.peer, err = w.peer.Dial("tcp", netip.AddrPortFrom(w.podIP, port).String(), 3*time.Second)
		} else {
			l = w.peerTCP[port]
			f.pod, err = w.pod.Dial("tcp", w.peerAddr(port).String(), 3*time.Second)
		}
		if err != nil {
			t.Fatalf("open %s: %v", f, err)
		}
		accepted, err := l.Accept()
		if err != nil {
			t.Fatalf("accept %s: %v", f, err)
		}
		if f.pod == nil {
			f.pod = accepted
		} else {
			f.peer = accepted
		}
		flows = append(flows, f)
	}
	return flows
}

// openUDP opens a UDP flow from the pod to the peer's port (egress), or from the peer to the pod's port
// (ingress): a connected socket at each end.
func (w *revokeWorld) openUDP(t *testing.T, name string, egress bool, port uint16) flow {
	t.Helper()
	f := flow{name: name, ingress: !egress, refusal: byDefault}
	podEnd, peerEnd := netip.AddrPortFrom(w.podIP, 40000+port), w.peerAddr(port)
	if !egress {
		podEnd, peerEnd = netip.AddrPortFrom(w.podIP, port), netip.AddrPortFrom(w.peerIP, 40000+port)
	}
	for _, end := range []struct {
		ns          *netnstest.NS
		conn        *net.Conn
		local, peer netip.AddrPort
	}{{w.pod, &f.pod, podEnd, peerEnd}, {w.peer, &f.peer, peerEnd, podEnd}} {
		err := end.ns.Do(func() (err error) {
			*end.conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(end.local), net.UDPAddrFromAddrPort(end.peer))
			return err
		})
		if err != nil {
			t.Fatalf("open %s: %v", f, err)
		}
		t.Cleanup(func() { (*end.conn).Close() })
	}
	return f
}

// openLoopback opens a TCP connection inside the pod, from the app to its own loopbackTCP.
func (w *revokeWorld) openLoopback(t *testing.T) flow {
	t.Helper()
	l := w.pod.Listen(t, "tcp", netip.AddrPortFrom(netip.IPv6Loopback(), loopbackTCP).String())
	f := flow{name: "loopback-tcp", refusal: verdict.Line{Rule: "no-admin", Evaluator: "loopback", Peer: "cidr:::1/128"}}
	var err error
	if f.pod, err = w.pod.Dial("tcp", l.Addr().String(), 3*time.Second); err != nil {
		t.Fatalf("open %s: %v", f, err)
	}
	t.Cleanup(func() { f.pod.Close() })
	if f.peer, err = l.Accept(); err != nil {
		t.Fatalf("accept %s: %v", f, err)
	}
	return f
}

// mustCarry checks that f carries data both ways: the opening end sends first, so that a UDP flow is
// opened in its own direction.
func mustCarry(t *testing.T, f flow) {
	t.Helper()
	ends := f.ends()
	if f.ingress {
		ends[0], ends[1] = ends[1], ends[0]
	}
	for _, e := range ends {
		if _, err := e.self.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: write from the %s: %v", f, e.name, err)
		}
		buf := make([]byte, 16)
		e.other.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := e.other.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("%s: sent from the %s, received %q, %v", f, e.name, buf[:n], err)
		}
	}
}

// mustBeCut checks, at both ends of every flow at once, that the flow carries nothing any more and
// that each end learns it by deadline: each end sends, and its read must end in an error (the reset,
// or the ICMP refusal, its own send drew) without ever returning the other end's data.
func mustBeCut(t *testing.T, deadline time.Time, flows []flow) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(flows))
	for _, f := range flows {
		for _, e := range f.ends() {
			wg.Go(func() {
				buf := make([]byte, 16)
				for time.Now().Before(deadline) {
					if _, err := e.self.Write([]byte("x")); err != nil {
						return // refused: the flow is cut
					}
					e.self.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					n, err := e.self.Read(buf)
					var ne net.Error
					switch {
					case n > 0:
						errs <- fmt.Errorf("%s: the %s received %q after the revocation", f, e.name, buf[:n])
						return
					case errors.As(err, &ne) && ne.Timeout():
						continue
					default:
						return // reset, refused or closed: the flow is cut
					}
				}
				errs <- fmt.Errorf("%s: the %s's flow still open at the deadline", f, e.name)
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// revokedLines returns the revoked lines written so far.
func revokedLines(t *testing.T, out *testutil.Buffer) []verdict.Line {
	t.Helper()
	var got []verdict.Line
	for line := range strings.Lines(out.String()) {
		var l verdict.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("verdict line %q: %v", line, err)
		}
		if l.Verdict == policy.Revoked {
			got = append(got, l)
		}
	}
	return got
}

// mustBeRevokedOnce checks that each flow of cut has exactly one revoked line, with what refused it,
// and that no other flow has any.
func mustBeRevokedOnce(t *testing.T, out *testutil.Buffer, rev int64, cut []flow) {
	t.Helper()
	lines := revokedLines(t, out)
	for _, f := range cut {
		src, dst := f.line()
		n := 0
		for _, l := range lines {
			if l.Src == src && l.Dst == dst {
				n++
				want := f.refusal
				want.Verdict, want.Mode, want.PolicyRevision = policy.Revoked, policy.Protect, rev
				if !matches(l, want) {
					t.Errorf("%s: revoked line %+v, want %+v", f, l, want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s (%s → %s): %d revoked lines, want 1", f, src, dst, n)
		}
	}
	if len(lines) != len(cut) {
		t.Errorf("%d revoked lines for %d cut flows:\n%s", len(lines), len(cut), out)
	}
}

// start runs the agent under p and fails the test unless it is in force.
func (w *revokeWorld) start(t *testing.T, p *policy.Policy) *Agent {
	t.Helper()
	w.write(t, p)
	a, _ := w.world.start(t, nil)
	if a.Revision() != p.Revision {
		t.Fatalf("revision %d in force, want %d", a.Revision(), p.Revision)
	}
	return a
}

func TestPolicyChangeCutsWhatItNoLongerAllows(t *testing.T) {
	w := newRevokeWorld(t)
	a := w.start(t, w.rules(policy.Protect, 1,
		[]policy.PortRange{tcpPort(egressTCP), tcpPort(keptTCP), udpPort(egressUDP)},
		[]policy.PortRange{tcpPort(ingressTCP), udpPort(ingressUDP)}))
	cut := append(w.openTCP(t, "egress-tcp", 3, egressTCP), w.openTCP(t, "ingress-tcp", 3, ingressTCP)...)
	cut = append(cut, w.openUDP(t, "egress-udp", true, egressUDP), w.openUDP(t, "ingress-udp", false, ingressUDP))
	cut = append(cut, w.openLoopback(t))
	kept := w.openTCP(t, "egress-kept", 1, keptTCP)
	for _, f := range append(cut, kept...) {
		mustCarry(t, f)
	}

	p := w.rules(policy.Protect, 2, []policy.PortRange{tcpPort(keptTCP)}, nil)
	p.Loopback = []policy.LoopbackRule{{ID: "no-admin", Origin: policy.OriginUser, Action: policy.ActionDeny,
		Ports: []policy.PortRange{tcpPort(loopbackTCP)}}}
	start := time.Now()
	if err := a.Apply(p); err != nil {
		t.Fatal(err)
	}
	mustBeCut(t, start.Add(time.Second), cut)
	mustCarry(t, kept[0])
	mustBeRevokedOnce(t, w.out, 2, cut)
	if got := promtest.ToFloat64(a.revoked); got != float64(len(cut)) {
		t.Errorf("podwall_revoked_total = %v, want %d", got, len(cut))
	}
}

func TestProtectAfterLearnCutsWhatProtectRefuses(t *testing.T) {
	w := newRevokeWorld(t)
	a := w.start(t, w.rules(policy.Learn, 1, nil, nil))
	cut := append(w.openTCP(t, "egress-tcp", 2, egressTCP), w.openUDP(t, "ingress-udp", false, ingressUDP))
	kept := w.openTCP(t, "egress-kept", 1, keptTCP)
	for _, f := range append(cut, kept...) {
		mustCarry(t, f)
	}
	allowKept := []policy.PortRange{tcpPort(keptTCP)}

	// Monitor only audits: it never cuts.
	if err := a.Apply(w.rules(policy.Monitor, 2, allowKept, nil)); err != nil {
		t.Fatal(err)
	}
	for _, f := range append(cut, kept...) {
		mustCarry(t, f)
	}
	if lines := revokedLines(t, w.out); len(lines) != 0 {
		t.Fatalf("Monitor revoked %d flows: %+v", len(lines), lines)
	}

	start := time.Now()
	if err := a.Apply(w.rules(policy.Protect, 3, allowKept, nil)); err != nil {
		t.Fatal(err)
	}
	mustBeCut(t, start.Add(time.Second), cut)
	mustCarry(t, kept[0])
	mustBeRevokedOnce(t, w.out, 3, cut)
}

// TestRevocationSparesTheSidecarsOwn checks that a connection the ruleset accepted as the sidecar's own
// (its socket mark) survives a policy that allows nothing, as the sidecar's link to policygen must.
func TestRevocationSparesTheSidecarsOwn(t *testing.T) {
	w := newRevokeWorld(t)
	a := w.start(t, w.rules(policy.Protect, 1, nil, nil))
	var own flow
	own.name = "own"
	err := w.pod.Do(func() error {
		// As pgclient's dialer: the destination becomes the sidecar's own, then the socket is marked.
		d := net.Dialer{Timeout: 3 * time.Second, Control: func(network, address string, rc syscall.RawConn) error {
			if err := a.allowSelf(network, address); err != nil {
				return err
			}
			return marktest.Control(ruleset.MarkSelf)(network, address, rc)
		}}
		c, err := d.Dial("tcp", w.peerAddr(egressTCP).String())
		own.pod = c
		return err
	})
	if err != nil {
		t.Fatalf("the sidecar's own connection: %v", err)
	}
	defer own.pod.Close()
	if own.peer, err = w.peerTCP[egressTCP].Accept(); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(w.rules(policy.Protect, 2, nil, nil)); err != nil {
		t.Fatal(err)
	}
	mustCarry(t, own)
	if lines := revokedLines(t, w.out); len(lines) != 0 {
		t.Fatalf("revoked the sidecar's own connection: %+v", lines)
	}
}

// TestRevokedFlowIsNotTakenUpMidStream checks that a cut connection stays cut when its next packet
// matches what the kernel accepts without asking: here the pod, whose inbound port the new policy
// closes, answers first, and its reply matches an egress rule the kernel enforces from its allow set
// (log-allows none). Conntrack takes such a mid-stream segment up as a new connection; the ruleset
// must refuse it, since only a SYN opens a TCP connection.
func TestRevokedFlowIsNotTakenUpMidStream(t *testing.T) {
	w := newRevokeWorld(t)
	anyPort := policy.PortRange{Protocol: policy.TCP, Port: 1, EndPort: 65535}
	w.write(t, w.rules(policy.Protect, 1, []policy.PortRange{anyPort}, []policy.PortRange{tcpPort(ingressTCP)}))
	a, _ := w.world.start(t, func(o *Options) { o.Log.Allows = verdictlog.AllowsNone })
	f := w.openTCP(t, "ingress-tcp", 1, ingressTCP)[0]
	mustCarry(t, f)

	start := time.Now()
	if err := a.Apply(w.rules(policy.Protect, 2, []policy.PortRange{anyPort}, nil)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	testutil.Eventually(t, time.Until(start.Add(time.Second)), func() error {
		if _, err := f.pod.Write([]byte("x")); err != nil {
			return nil // reset
		}
		f.pod.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := f.pod.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // reset
		}
		return errors.New("the pod's side of the cut connection is not reset")
	})
	// The pod's segment drew the reset, so it never reached the peer.
	f.peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := f.peer.Read(buf); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer read %q, %v after the revocation, want nothing", buf[:n], err)
	}
}
