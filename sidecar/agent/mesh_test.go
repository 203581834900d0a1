package agent

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
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
	w.out.waitFor(t, map[string]any{"verdict": "allow", "direction": "egress", "rule": "api",
		"peer": "workload:shop/Deployment/api", "dst": w.peerAddr(80)})
	eventually(t, "the proxy accepts the allowed connection (the redirect stays in effect)",
		func() bool { return proxied.Load() == 1 })
	w.mustRefuseFast(t, w.peerAddr(81))
	w.out.waitFor(t, map[string]any{"verdict": "deny", "direction": "egress", "dst": w.peerAddr(81)})
	w.mustRefuseFast(t, "127.0.0.1:15000")
	w.out.waitFor(t, map[string]any{"verdict": "deny", "direction": "loopback", "rule": "envoy-admin"})
}

// TestUpdatesUnderTrafficFailNoAllowedConnection applies 100 policy revisions while a client keeps
// connecting to an allowed peer: not one connection may fail, and the last revision must be in force.
func TestUpdatesUnderTrafficFailNoAllowedConnection(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	s, _ := w.start(t, nil)
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
				c, err := net.DialTimeout("tcp", w.peerAddr(80), 3*time.Second)
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
		if err := s.Apply(w.policy(policy.Protect, rev, 80, uint16(1000+rev))); err != nil {
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
	if s.Revision() != 101 {
		t.Fatalf("revision %d in force, want 101", s.Revision())
	}
	w.mustRefuseFast(t, w.peerAddr(81))
	t.Logf("%d connections during 100 updates", ok.Load())
}
