package learn

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// TestCanaryRollout runs a canary rollout against the real API server with an injected clock: the
// leader picks the first Ready pod by name, the hub serves it Protect and the others Monitor; a deny
// reported by another pod changes nothing, one reported by the canary stops the rollout (Warning
// Event, every pod back in Monitor) and a stopped rollout stays stopped however long it waits; a change
// of the rules starts it again, a canary that goes away is replaced, and a clean window passes it
// (Normal Event) and promotes the autoProtect policy to Protect, which clears status.canary.
func TestCanaryRollout(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var hub *resolve.Hub
	var prom *Promoter
	var guard *CanaryGuard
	var learner *Learner
	pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		if err := resolve.Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub = resolve.NewHub(mgr.GetCache(), resolve.HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		events := mgr.GetEventRecorder("podwall-policygen")
		prom = NewPromoter(mgr.GetClient(), mgr.GetCache(), PromoteOptions{MonitorQuiet: 2 * time.Hour, CanaryWindow: time.Hour, Events: events, Clock: clk})
		learner = NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), LearnerOptions{Clock: clk, Interval: time.Hour}, testr.New(t))
		guard = NewCanaryGuard(learner, mgr.GetCache(), mgr.GetAPIReader(), mgr.GetClient(), events, testr.New(t))
		return mgr.Add(hub)
	})
	pgtest.Namespace(t, c, "shop", nil)
	pods := k.Deployment("shop", "web", "", "10.1.0.1", "10.1.0.2", "10.1.0.3")
	for _, pod := range pods[1:] { // web-5d8f-0 is not Ready: it cannot be picked
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	wl := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Monitor, AutoProtect: true,
			Canary: ptr.To(intstr.FromInt32(1)),
			Egress: []v1.Rule{{Name: "db", Origin: "user", Peers: []v1.Peer{{CIDR: "192.0.2.0/24"}}}}}})

	// reconcile runs the promoter until the policy passes check: the promoter reads the cache, which
	// may not hold its last write yet (a conflict, retried as the controller would).
	var wp v1.WorkloadPolicy
	reconcileUntil := func(what string, check func() error) {
		t.Helper()
		testutil.Await(t, what, 10*time.Second, func() error {
			if _, err := prom.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
				return err
			}
			if err := c.Get(ctx, key, &wp); err != nil {
				return err
			}
			return check()
		})
	}
	canary := func(state v1.CanaryState, pods ...string) func() error {
		return func() error {
			got := wp.Status.Canary
			if got == nil || got.State != state || !slices.Equal(got.Pods, pods) || got.Generation != wp.Generation {
				return fmt.Errorf("status.canary %+v (generation %d), want %s %v", got, wp.Generation, state, pods)
			}
			return nil
		}
	}
	// served waits until the hub serves the pods mode, but the canaries Protect with Canary set.
	served := func(mode policy.Mode, pods []string, canaries ...string) {
		t.Helper()
		testutil.Await(t, fmt.Sprintf("served %s, canaries %v", mode, canaries), 10*time.Second, func() error {
			snap, release, err := hub.Acquire(ctx, wl)
			if err != nil {
				return err
			}
			defer release()
			for _, pod := range pods {
				p, hash := snap.For(pod)
				want, canary := mode, slices.Contains(canaries, pod)
				if canary {
					want = policy.Protect
				}
				if p.Mode != want || p.Canary != canary || hash != policy.ContentHash(p) {
					return fmt.Errorf("pod %s served mode %s canary %v, want %s", pod, p.Mode, p.Canary, want)
				}
			}
			return nil
		})
	}
	all := []string{"web-5d8f-0", "web-5d8f-1", "web-5d8f-2"}
	// revision is the revision the hub serves the workload now, which its sidecars would hold.
	revision := func() int64 {
		t.Helper()
		snap, release, err := hub.Acquire(ctx, wl)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		p, _ := snap.For(all[0])
		return p.Revision
	}
	report := func(pod *corev1.Pod, v policy.Verdict) {
		t.Helper()
		id := policyapi.Identity{Pod: client.ObjectKeyFromObject(pod), UID: pod.UID, Workload: wl}
		r := policy.Report{Entries: []policy.ReportEntry{{Direction: policy.Egress, Peer: netip.MustParseAddr("203.0.113.9"),
			Protocol: policy.TCP, Port: 25, Count: 1, Verdict: v}}}
		if err := guard.Accept(ctx, id, &r); err != nil {
			t.Fatal(err)
		}
	}

	reconcileUntil("canary running on the first Ready pod", canary(v1.CanaryRunning, "web-5d8f-1"))
	if !wp.Status.Canary.Since.Time.Equal(clk.Now()) {
		t.Errorf("canary since %v, want %v", wp.Status.Canary.Since, clk.Now())
	}
	served(policy.Monitor, all, "web-5d8f-1")

	// Another pod's deny (it runs Monitor: a floor in its config file may make it Protect) and the
	// canary's audit stop nothing; the reports reach the learner all the same.
	report(pods[2], policy.Deny)
	report(pods[1], policy.Audit)
	learner.Flush(ctx)
	reconcileUntil("canary still running", canary(v1.CanaryRunning, "web-5d8f-1"))
	if wp.Status.Violations != 2 {
		t.Errorf("violations %d, want 2: the guard passes reports on", wp.Status.Violations)
	}

	report(pods[1], policy.Deny)
	if err := c.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if err := canary(v1.CanaryStopped, "web-5d8f-1")(); err != nil {
		t.Fatal(err)
	}
	if want := "canary pod web-5d8f-1 denied egress TCP to 203.0.113.9 port 25"; wp.Status.Canary.Reason != want {
		t.Errorf("reason %q, want %q", wp.Status.Canary.Reason, want)
	}
	event(t, c, ReasonCanaryStopped, "canary pod web-5d8f-1 denied egress TCP to 203.0.113.9 port 25 under Protect")
	served(policy.Monitor, all)

	// A stopped rollout neither restarts nor promotes by waiting, though no audit came for longer than
	// the quiet period.
	clk.Step(3 * time.Hour)
	reconcileUntil("canary still stopped", canary(v1.CanaryStopped, "web-5d8f-1"))
	if wp.Spec.Mode != policy.Monitor {
		t.Fatalf("mode %s after a stopped canary, want Monitor", wp.Spec.Mode)
	}

	// New rules start it again; the canary that goes away is replaced by the next Ready pod.
	wp.Spec.Egress = append(wp.Spec.Egress, v1.Rule{Name: "smtp", Origin: "user", Peers: []v1.Peer{{CIDR: "203.0.113.9/32"}},
		Ports: []v1.Port{{Protocol: "TCP", Port: 25}}})
	if err := c.Update(ctx, &wp); err != nil {
		t.Fatal(err)
	}
	restarted := clk.Now()
	reconcileUntil("canary restarted", canary(v1.CanaryRunning, "web-5d8f-1"))
	// Every pod has its sidecar subscribed from here on: the evidence the promotion needs.
	subscribe(t, c, key, 3, revision(), clk.Now())
	if err := c.Delete(ctx, pods[1]); err != nil {
		t.Fatal(err)
	}
	clk.Step(30 * time.Minute)
	subscribe(t, c, key, 2, revision(), clk.Now())
	reconcileUntil("canary replaced", canary(v1.CanaryRunning, "web-5d8f-2"))
	if !wp.Status.Canary.Since.Time.Equal(restarted) || wp.Status.Canary.Reason != "" {
		t.Errorf("canary %+v, want since %v and no reason", wp.Status.Canary, restarted)
	}
	served(policy.Monitor, all, "web-5d8f-2")

	// A whole window without a deny passes it and promotes the policy.
	clk.Step(30 * time.Minute)
	subscribe(t, c, key, 2, revision(), clk.Now())
	reconcileUntil("promoted after the canary passed", func() error {
		if wp.Spec.Mode != policy.Protect {
			return fmt.Errorf("mode %s, want Protect (blocked: %s)", wp.Spec.Mode, wp.Status.PromotionBlocked)
		}
		return nil
	})
	event(t, c, ReasonCanaryPassed, "the canary pods [web-5d8f-2] enforced Protect for 1h0m0s without a deny; autoProtect promotes it to Protect")
	reconcileUntil("status.canary cleared in Protect", func() error {
		if wp.Status.Canary != nil {
			return fmt.Errorf("status.canary %+v in Protect", wp.Status.Canary)
		}
		return nil
	})
	served(policy.Protect, all)
}

// event waits for an Event of reason on the policy deployment-web whose note contains want.
func event(t *testing.T, c client.Client, reason, want string) {
	t.Helper()
	testutil.Await(t, "event "+reason, 10*time.Second, func() error {
		var list eventsv1.EventList
		if err := c.List(context.Background(), &list, client.InNamespace("shop")); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "WorkloadPolicy" && e.Regarding.Name == "deployment-web" && e.Reason == reason {
				if strings.Contains(e.Note, want) {
					return nil
				}
				seen = append(seen, e.Note)
			}
		}
		return fmt.Errorf("no %s event containing %q (saw %q)", reason, want, seen)
	})
}

func TestPickCanaries(t *testing.T) {
	pod := func(name string, ready bool, phase corev1.PodPhase) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase}}
		if ready {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		return p
	}
	terminating := pod("a-terminating", true, corev1.PodRunning)
	terminating.DeletionTimestamp = &metav1.Time{}
	pods := []corev1.Pod{pod("e", true, corev1.PodRunning), pod("b", false, corev1.PodPending), pod("d", true, corev1.PodRunning),
		pod("c", true, corev1.PodRunning), pod("a-done", true, corev1.PodSucceeded), terminating}
	tests := []struct {
		spec intstr.IntOrString
		prev []string
		want []string
	}{
		{intstr.FromInt32(1), nil, []string{"c"}},
		{intstr.FromInt32(2), nil, []string{"c", "d"}},
		{intstr.FromInt32(9), nil, []string{"c", "d", "e"}},                // only Ready pods start as canaries
		{intstr.FromString("25%"), nil, []string{"c"}},                     // of 4 live pods: 1
		{intstr.FromString("50%"), nil, []string{"c", "d"}},                // 2
		{intstr.FromString("51%"), nil, []string{"c", "d", "e"}},           // 2.04, rounded up
		{intstr.FromString("1%"), nil, []string{"c"}},                      // at least one
		{intstr.FromInt32(1), []string{"e"}, []string{"e"}},                // a canary stays
		{intstr.FromInt32(1), []string{"b"}, []string{"b"}},                // even while not Ready
		{intstr.FromInt32(2), []string{"a-done", "e"}, []string{"c", "e"}}, // a finished one is replaced
		{intstr.FromInt32(1), []string{"a-terminating"}, []string{"c"}},
		{intstr.FromInt32(1), []string{"e", "d"}, []string{"d"}}, // fewer wanted: the first by name stays
	}
	for _, tc := range tests {
		got, err := pickCanaries(&tc.spec, tc.prev, pods)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("pickCanaries(%s, %v) = %v, %v; want %v", tc.spec.String(), tc.prev, got, err, tc.want)
		}
	}
	if got, err := pickCanaries(ptr.To(intstr.FromInt32(1)), nil, nil); err != nil || got != nil {
		t.Errorf("no pods: %v, %v; want none", got, err)
	}
	var many []corev1.Pod
	for i := range 100 {
		many = append(many, pod(fmt.Sprintf("p%03d", i), true, corev1.PodRunning))
	}
	if got, err := pickCanaries(ptr.To(intstr.FromString("100%")), nil, many); err != nil || len(got) != maxCanaryPods || got[0] != "p000" {
		t.Errorf("100%% of 100 pods: %d canaries from %v, %v; want the first %d", len(got), got[:min(len(got), 1)], err, maxCanaryPods)
	}
	if _, err := pickCanaries(ptr.To(intstr.FromString("x")), nil, pods); err == nil {
		t.Error("spec.canary \"x\": no error")
	}
}
