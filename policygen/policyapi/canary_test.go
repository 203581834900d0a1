package policyapi

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestCanaryServing checks that, of a workload in Monitor whose canary rollout runs, the canary pod is
// served Protect with Canary set and another pod Monitor, each as its own authenticated identity says
// (no request names a pod); that each counts as in sync holding its own form; and that a parked poll
// of the canary returns Monitor as soon as the rollout stops, while the other pod's poll stays parked.
func TestCanaryServing(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pgtest.Namespace(t, e.c, "shop", nil)
	pods := e.k.Deployment("shop", "web", "web", "10.1.0.1", "10.1.0.2")
	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web"}
	canary := intstr.FromInt32(1)
	wp := e.k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Monitor, Canary: &canary,
			Egress: []v1.Rule{{Name: "db", Peers: []v1.Peer{{CIDR: "192.0.2.0/24"}}}}}}).(*v1.WorkloadPolicy)
	wp.Status.Canary = &v1.CanaryStatus{State: v1.CanaryRunning, Pods: []string{pods[0].Name}, Since: metav1.Now(), Generation: wp.Generation}
	if err := e.c.Status().Update(ctx, wp); err != nil {
		t.Fatal(err)
	}
	canaryToken, otherToken := e.k.Token(pods[0], "podwall"), e.k.Token(pods[1], "podwall")

	type held struct {
		p    *policy.Policy
		etag string
	}
	get := func(token string, mode policy.Mode, isCanary bool) held {
		t.Helper()
		var h held
		testutil.Eventually(t, 10*time.Second, func() error {
			code, p, hdr := e.policy(token, "?wait=0")
			if code != http.StatusOK {
				return fmt.Errorf("GET /v1/policy: %d", code)
			}
			if p.Mode != mode || p.Canary != isCanary {
				return fmt.Errorf("served mode %s canary %v, want %s %v", p.Mode, p.Canary, mode, isCanary)
			}
			h = held{p, hdr.Get("ETag")}
			return nil
		})
		if h.etag != `"`+policy.ContentHash(h.p)+`"` {
			t.Errorf("ETag %s is not the served policy's ContentHash %s", h.etag, policy.ContentHash(h.p))
		}
		return h
	}
	c, o := get(canaryToken, policy.Protect, true), get(otherToken, policy.Monitor, false)
	if c.p.Revision != o.p.Revision || len(c.p.Egress) != 1 || len(o.p.Egress) != 1 || c.p.Egress[0].ID != o.p.Egress[0].ID {
		t.Fatalf("canary served %+v, other %+v: want the same revision and rules", c.p, o.p)
	}

	// Both poll holding what they were served: both are in sync.
	poll := func(token string, h held, wait int) chan int {
		done := make(chan int, 1)
		go func() {
			code, _, _ := e.policy(token, fmt.Sprintf("?after=%d&wait=%d", h.p.Revision, wait), "If-None-Match", h.etag)
			done <- code
		}()
		return done
	}
	canaryPoll, otherPoll := poll(canaryToken, c, 30), poll(otherToken, o, 5)
	testutil.Eventually(t, 10*time.Second, func() error {
		var p v1.WorkloadPolicy
		if err := e.c.Get(ctx, key, &p); err != nil {
			return err
		}
		if len(p.Status.Replicas) != 1 || p.Status.Replicas[0].Sidecars != 2 || p.Status.Replicas[0].SidecarsInSync != 2 {
			return fmt.Errorf("replicas %+v, want two sidecars in sync", p.Status.Replicas)
		}
		return nil
	})

	// The rollout stops: the canary's poll returns at once, with Monitor.
	if err := e.c.Get(ctx, key, wp); err != nil {
		t.Fatal(err)
	}
	wp.Status.Canary.State = v1.CanaryStopped
	if err := e.c.Status().Update(ctx, wp); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-canaryPoll:
		if code != http.StatusOK {
			t.Fatalf("canary's poll: %d, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the canary's parked poll did not return when the rollout stopped")
	}
	back := get(canaryToken, policy.Monitor, false)
	if back.p.Revision <= c.p.Revision {
		t.Errorf("canary back in Monitor under revision %d, want above %d", back.p.Revision, c.p.Revision)
	}
	// The other pod holds what it is still served: its poll waits out its wait.
	select {
	case code := <-otherPoll:
		if code != http.StatusNotModified {
			t.Errorf("other pod's poll: %d, want 304", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other pod's poll did not end")
	}
}
