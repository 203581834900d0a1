package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
)

// countAccepts listens on addr inside ns and counts the connections it accepts.
func countAccepts(t *testing.T, ns *netnstest.NS, addr string) *atomic.Int64 {
	l := ns.Listen(t, "tcp", addr)
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// netAdmin runs nft in ns as an unprivileged uid holding exactly CAP_NET_ADMIN: a debug container
// with the netadmin profile, or a second binary exec'd into the sidecar's container.
func netAdmin(t *testing.T, ns *netnstest.NS, cmd string) {
	t.Helper()
	out, err := ns.Command(context.Background(), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "nft", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s as uid 65534 with CAP_NET_ADMIN: %v\n%s", cmd, err, out)
	}
}

// TestTamperingIsUndone: while a Protect policy refuses an unlisted port, a process holding
// CAP_NET_ADMIN in the pod's namespace deletes the table, flushes the output chain, and accepts
// everything at the top of the input chain. Each time the policy is back within a second (the
// listener behind the unlisted port gets nothing), logged and counted; the sidecar's own applies,
// restores included, are not counted.
func TestTamperingIsUndone(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	w := newWorld(t)
	logs := &testutil.Buffer{}
	w.log = funcr.New(func(prefix, args string) {
		fmt.Fprintln(logs, prefix, args)
		t.Log(prefix, args)
	}, funcr.Options{})
	w.writePolicy(t, policy.Protect, 3, 80)
	a, _ := w.start(t, nil)
	egress := netip.AddrPortFrom(w.peerIP, 9091)
	gotEgress := countAccepts(t, w.peer, egress.String())
	ingress := netip.AddrPortFrom(w.podIP, 9092)
	gotIngress := countAccepts(t, w.pod, ingress.String())
	refused := func(t *testing.T) {
		t.Helper()
		w.mustRefuseFast(t, egress)
		if c, err := w.peer.Dial("tcp", ingress.String(), time.Second); err == nil {
			c.Close()
			t.Fatalf("ingress to %s got through", ingress)
		}
		if n, m := gotEgress.Load(), gotIngress.Load(); n+m != 0 {
			t.Fatalf("listeners behind unlisted ports accepted %d egress and %d ingress connections", n, m)
		}
	}
	refused(t)
	if g := a.guarding(); !g.Tampered.IsZero() {
		t.Fatalf("guard %s before any attack", g)
	}

	for i, attack := range []struct{ name, cmd, change string }{
		{"delete table", "delete table inet podwall", "delete table podwall"},
		{"flush output", "flush chain inet podwall " + ruleset.ChainOutput, "delete rule in chain " + ruleset.ChainOutput},
		{"accept first in input", "insert rule inet podwall " + ruleset.ChainInput + " accept", "add rule in chain " + ruleset.ChainInput},
	} {
		t.Run(attack.name, func(t *testing.T) {
			if i == 1 {
				// An own apply between two attacks: were it counted, the count below would be off.
				w.writePolicy(t, policy.Protect, 4, 80, 8080)
				waitRevision(t, a, 4)
			}
			netAdmin(t, w.pod, attack.cmd)
			want := float64(i + 1)
			testutil.Eventually(t, time.Second, func() error {
				if got := promtest.ToFloat64(a.tampered); got != want {
					return fmt.Errorf("podwall_ruleset_tamper_total %v, want %v", got, want)
				}
				if n := strings.Count(logs.String(), `"msg"="ruleset changed by another process; restored"`); n != i+1 {
					return fmt.Errorf("%d restored lines, want %d", n, i+1)
				}
				return nil
			})
			if !strings.Contains(logs.String(), attack.change) {
				t.Errorf("no log line names %q:\n%s", attack.change, logs)
			}
			refused(t)
		})
	}
	if got := promtest.ToFloat64(a.tampered); got != 3 {
		t.Errorf("podwall_ruleset_tamper_total %v, want 3", got)
	}
	// policygen is told, with each request, when the last restore was: it counts the pod as weakened.
	if g := a.guarding(); time.Since(g.Tampered) > time.Minute || time.Until(g.Tampered) > time.Second {
		t.Errorf("guard %s after the attacks, want tampered within the last minute", g)
	}
}
