package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/ruleset/marktest"
	"podwall.io/podwall/sidecar/verdictlog"
)

// forgedMarks are the marks an app holding CAP_NET_RAW puts on its socket: the sidecar's own, the
// verdicts', every podwall bit, every bit.
var forgedMarks = []uint32{ruleset.MarkSelf, ruleset.MarkAllow, ruleset.MarkDeny | ruleset.MarkAllow, ruleset.MarkMask, 0xffffffff}

// waitLines waits until n verdict lines on out have every field that want sets.
func waitLines(t *testing.T, out *testutil.Buffer, want verdict.Line, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		got := 0
		for line := range strings.Lines(out.String()) {
			var l verdict.Line
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("verdict line %q: %v", line, err)
			}
			if matches(l, want) {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d verdict lines with %+v, want %d", got, want, n)
		}
		return nil
	})
}

// TestForgedMarksAreJudgedAndLogged: an app holding CAP_NET_RAW alone (uid 65534) sets each podwall
// mark on its socket and connects over TCP and UDP to a port the Protect policy does not allow. The
// peer receives nothing, each attempt (the deny memo emptied before it) gets its deny line, and nothing is remembered for the pod: an
// ordinary process is refused afterwards.
func TestForgedMarksAreJudgedAndLogged(t *testing.T) {
	w := newWorld(t)
	tcp83, udp83 := marktest.Count(t, w.peer, "tcp", ":83"), marktest.Count(t, w.peer, "udp", ":83")
	udp80 := marktest.Count(t, w.peer, "udp", ":80")
	w.writePolicy(t, policy.Protect, 1, 80)
	// AllowsFirst: the seen sets are in use, so a planted key would let repeats through.
	a, _ := w.start(t, func(o *Options) { o.Log.Allows = verdictlog.AllowsFirst })
	p := w.policy(policy.Protect, 2, 80)
	p.Egress[0].Ports = append(p.Egress[0].Ports, policy.PortRange{Protocol: policy.UDP, Port: 80})
	if err := a.Apply(p); err != nil {
		t.Fatal(err)
	}
	att := marktest.New(t, w.pod)
	target := w.peerAddr(83)
	denied := verdict.Line{Verdict: policy.Deny, Direction: policy.Egress, Dst: target, Rule: "default", PolicyRevision: 2}
	attempts := 0
	for _, mark := range forgedMarks {
		for _, network := range []string{"tcp", "udp"} {
			w.forgetDenials(t) // so that each attempt reaches the verdict loop, not the deny memo
			err := att.Connect(mark, network, target)
			if network == "tcp" && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("mark %#x: tcp to %s: %v, want connection refused", mark, target, err)
			}
			attempts++
			waitLines(t, w.out, denied, attempts)
		}
	}
	w.forgetDenials(t) // what the ordinary process meets below is the verdict loop's answer
	w.mustRefuseFast(t, target)
	if _, err := w.dial(target); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("ordinary connection after the attacks: %v, want connection refused", err)
	}
	sendUDP(t, w, target)
	// Sent last over the same path, this arrives after anything the attackers sent.
	sendUDP(t, w, w.peerAddr(80))
	udp80.WaitReceived(t, 1, "udp 80")
	if n, m := tcp83.Received(), udp83.Received(); n != 0 || m != 0 {
		t.Errorf("port 83 received %d connections and %d datagrams, want none", n, m)
	}
}

// sendUDP sends one datagram from the pod, as an ordinary process.
func sendUDP(t *testing.T, w *world, to netip.AddrPort) {
	t.Helper()
	c, err := w.pod.Dial("udp", to.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("udp to %s: %v", to, err)
	}
}

// TestOwnConnectionsUnderDenyAll: the agent adds policygen's address to the ruleset's self
// destinations before its client connects, and every later Apply keeps it, so that the sidecar's
// own sockets (MarkSelf) reach policygen under the deny-all baseline; an unmarked socket does not,
// and an app that forges MarkSelf towards any other destination is refused and logged. (The agent
// under test runs in the test's namespace and guards the pod's, so its client connects from here;
// the pod's side of policygen's address is played by a marked socket in the pod, over a link to a
// stand-in that accepts and closes.)
func TestOwnConnectionsUnderDenyAll(t *testing.T) {
	w := newWorld(t)
	host, _ := netnstest.PairHost(t, w.pod)
	standIn := marktest.Count(t, nil, "tcp", netip.AddrPortFrom(host.Addr.Addr(), 0).String())
	pg := netip.MustParseAddrPort(standIn.Addr().String())
	tcp83 := marktest.Count(t, w.peer, "tcp", ":83")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start(t, func(o *Options) {
		o.PolicyFile = ""
		o.PolicyGen = PolicyGen{URL: "https://" + pg.String(), TokenFile: token, FirstPolicyWait: time.Millisecond}
	})
	testutil.Eventually(t, 5*time.Second, func() error {
		if standIn.Received() == 0 {
			return errors.New("the sidecar's client has not connected to policygen")
		}
		return nil
	})
	selfDests := func() string {
		return w.pod.Exec(t, "nft", "list", "set", "inet", "podwall", ruleset.SetSelfDests4)
	}
	if want := pg.Addr().String() + " . tcp . " + fmt.Sprint(pg.Port()); !strings.Contains(selfDests(), want) {
		t.Fatalf("self destinations lack policygen's %s:\n%s", want, selfDests())
	}
	if err := marktest.Dial(w.pod, ruleset.MarkSelf, pg); err != nil {
		t.Errorf("the sidecar's own connection to policygen under deny-all: %v", err)
	}
	if err := a.Apply(w.policy(policy.Protect, 4)); err != nil {
		t.Fatal(err)
	}
	if err := marktest.Dial(w.pod, ruleset.MarkSelf, pg); err != nil {
		t.Errorf("the sidecar's own connection to policygen after a re-apply: %v", err)
	}
	if err := marktest.Dial(w.pod, 0, pg); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("an unmarked connection to policygen under deny-all: %v, want connection refused", err)
	}

	att := marktest.New(t, w.pod)
	if err := att.Connect(ruleset.MarkSelf, "tcp", w.peerAddr(83)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("forged MarkSelf to a destination not the sidecar's: %v, want connection refused", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Direction: policy.Egress, Dst: w.peerAddr(83)})
	if n := tcp83.Received(); n != 0 {
		t.Errorf("port 83 received %d connections with a forged MarkSelf, want 0", n)
	}
}

func TestSelfDest(t *testing.T) {
	for _, tc := range []struct {
		network, address string
		want             ruleset.Dest
		err              bool
	}{
		{"tcp4", "10.96.0.7:9443", ruleset.Dest{Proto: policy.TCP, Addr: netip.MustParseAddrPort("10.96.0.7:9443")}, false},
		{"udp6", "[fd00::a]:53", ruleset.Dest{Proto: policy.UDP, Addr: netip.MustParseAddrPort("[fd00::a]:53")}, false},
		{"unix", "/run/x.sock", ruleset.Dest{}, true},
		{"ip4:1", "10.0.0.1:0", ruleset.Dest{}, true},
	} {
		got, err := selfDest(tc.network, tc.address)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("selfDest(%q, %q) = %v, %v; want %v (error: %t)", tc.network, tc.address, got, err, tc.want, tc.err)
		}
	}
}
