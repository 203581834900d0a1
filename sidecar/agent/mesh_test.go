package agent

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/testutil"
)

// TestMeshRedirectJudgedAgainstTheRealRemote plays istio-init: the pod's outbound TCP is redirected to a
// local "proxy" on 15001. The sidecar must judge and log each app→proxy connection against the remote
// behind the redirect (the ruleset judges egress before NAT, so the verdict line's dst and peer are the
// real remote), and refuse the proxy's admin port to the app.
func TestMeshRedirectJudgedAgainstTheRealRemote(t *testing.T) {
	w := newWorld(t)
	w.pod.Exec(t, "nft", "add table ip mesh; add chain ip mesh output { type nat hook output priority -100; }; "+
		"add rule ip mesh output oif != lo tcp dport { 80, 81 } redirect to :15001")
	var proxied atomic.Int64
	proxy := w.pod.Listen(t, "tcp", "0.0.0.0:15001")
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			proxied.Add(1)
			c.Close()
		}
	}()
	w.pod.Serve(t, "127.0.0.1:15000")
	w.writePolicy(t, policy.Protect, 5, 80)
	w.start(t, nil)

	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("app→proxy connection to an allowed remote: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Direction: policy.Egress, Rule: "api",
		Peer: "workload:shop/Deployment/api", Dst: w.peerAddr(80)})
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := proxied.Load(); n != 1 {
			return fmt.Errorf("the proxy accepted %d connections, want the allowed one (the redirect stays in effect)", n)
		}
		return nil
	})
	w.mustRefuseFast(t, w.peerAddr(81))
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Direction: policy.Egress, Dst: w.peerAddr(81)})
	w.mustRefuseFast(t, netip.MustParseAddrPort("127.0.0.1:15000"))
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Direction: policy.Loopback, Rule: "envoy-admin"})
}

// TestUpdatesUnderTrafficFailNoAllowedConnection applies 100 policy revisions while a client keeps
// connecting to an allowed peer: not one connection may fail, and the last revision must be in force.
func TestUpdatesUnderTrafficFailNoAllowedConnection(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	a, _ := w.start(t, nil)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := w.pod.Do(func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				c, err := net.DialTimeout("tcp", w.peerAddr(80).String(), 3*time.Second)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				c.Close()
				ok.Add(1)
			}
		})
		if err != nil {
			t.Error(err)
		}
	}()
	for rev := int64(2); rev <= 101; rev++ {
		// Alternate the second allowed port so that every revision really changes the ruleset.
		if err := a.Apply(w.policy(policy.Protect, rev, 80, uint16(1000+rev))); err != nil {
			t.Fatalf("apply revision %d: %v", rev, err)
		}
	}
	close(stop)
	<-done
	if failed.Load() > 0 {
		t.Fatalf("%d of %d allowed connections failed during updates; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() == 0 {
		t.Fatal("no connection was made during the updates")
	}
	if a.Revision() != 101 {
		t.Fatalf("revision %d in force, want 101", a.Revision())
	}
	w.mustRefuseFast(t, w.peerAddr(81))
	t.Logf("%d connections during 100 updates", ok.Load())
}
