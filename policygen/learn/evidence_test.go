package learn

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
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

// subscribe writes a policygen replica's entry as its tracker would: sidecars subscribed to the
// policy, holding revision, at the given time, for the pods named (none: a replica that counts its
// subscribers without naming them).
func subscribe(t *testing.T, c client.Client, key types.NamespacedName, sidecars int32, revision int64, at time.Time, pods ...string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // the learner writes status too
		var wp v1.WorkloadPolicy
		if err := c.Get(context.Background(), key, &wp); err != nil {
			return err
		}
		wp.Status.Replicas = []v1.ReplicaStatus{{Name: "policygen-0", Revision: revision, Sidecars: sidecars, SidecarsInSync: sidecars, Updated: metav1.NewTime(at), Pods: pods}}
		return c.Status().Update(context.Background(), &wp)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEvidenceGatesPromotion runs a two-pod workload through Learn and Monitor to Protect with an
// injected clock against a real API server: a silent pod keeps it in Learn, a would-deny flow keeps it
// in Monitor, and a clean, fully covered window promotes it, each promotion with an Event.
func TestEvidenceGatesPromotion(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	// The clock starts at the real time: pods are as old as the API server says, and a pod younger
	// than the promoter's grace is not expected to have a sidecar subscribed yet.
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second)) // as status stores times
	var learner *Learner
	var prom *Promoter
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		learner = NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), LearnerOptions{Clock: clk, Interval: time.Hour}, testr.New(t))
		prom = NewPromoter(c, mgr.GetCache(), PromoteOptions{LearnQuiet: time.Hour, MonitorQuiet: 2 * time.Hour, Clock: clk,
			Events: mgr.GetEventRecorder("podwall-policygen")})
		return resolve.Index(ctx, mgr.GetFieldIndexer())
	})
	pgtest.Namespace(t, c, "shop", nil)
	web := k.Deployment("shop", "web", "", "10.2.0.1", "10.2.0.2")
	k.Deployment("shop", "api", "", "10.2.0.5")
	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Learn, AutoProtect: true}})
	testutil.Eventually(t, 10*time.Second, func() error {
		pods, err := resolve.WorkloadPods(ctx, mgr.GetCache(), workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"})
		if err != nil || len(pods) != 2 {
			return fmt.Errorf("%d pods of web in the cache (%v)", len(pods), err)
		}
		return owned(ctx, mgr.GetCache(), "10.2.0.5")
	})

	var wp v1.WorkloadPolicy
	// reconcileAt has the promoter look advance later, with sidecars of pods subscribed at revision.
	reconcileAt := func(advance time.Duration, revision int64, pods ...string) *v1.WorkloadPolicyStatus {
		t.Helper()
		clk.Step(advance)
		subscribe(t, c, key, int32(len(pods)), revision, clk.Now(), pods...)
		if _, err := prom.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if err := c.Get(ctx, key, &wp); err != nil {
			t.Fatal(err)
		}
		return &wp.Status
	}
	t0 := clk.Now()
	coverage := func(want v1.Coverage) {
		t.Helper()
		want.Generation = wp.Generation
		if d := cmp.Diff(&want, wp.Status.Coverage); d != "" {
			t.Errorf("coverage (-want +got):\n%s", d)
		}
	}

	// Learn, an hour and a minute quiet, but one of the two pods never had a sidecar: no promotion,
	// and status says why. Both hours of the window (the past one and the one under way) are gaps. The
	// second sidecar subscribed is a gone pod's, still in its replica's grace: it covers no pod.
	reconcileAt(0, 1, web[0].Name)
	coverage(v1.Coverage{Since: metav1.NewTime(t0), Pods: 2, Reported: 1})
	st := reconcileAt(61*time.Minute, 1, web[0].Name, "web-gone")
	if wp.Spec.Mode != policy.Learn || !strings.Contains(st.PromotionBlocked, "1 of 2 pods have no sidecar subscribed") {
		t.Fatalf("silent pod: mode %s, promotionBlocked %q; want Learn, blocked by the silent pod", wp.Spec.Mode, st.PromotionBlocked)
	}
	coverage(v1.Coverage{Since: metav1.NewTime(t0), Pods: 2, Reported: 1, GapHours: 2})

	// A new revision alone (a peer's address changed) is the same window.
	reconcileAt(time.Minute, 2, web[0].Name)
	coverage(v1.Coverage{Since: metav1.NewTime(t0), Pods: 2, Reported: 1, GapHours: 2})

	// The rules change (a new generation) and both sidecars subscribe: a new window, complete; the
	// policy is promoted to Monitor with an Event naming the evidence.
	addRule(t, c, key, v1.Rule{Name: "db", Origin: "user", Peers: []v1.Peer{{CIDR: "192.0.2.0/24"}}})
	st = reconcileAt(0, 3, web[0].Name, web[1].Name)
	if wp.Spec.Mode != policy.Monitor || st.PromotionBlocked != "" {
		t.Fatalf("covered: mode %s, promotionBlocked %q; want Monitor, nothing blocked", wp.Spec.Mode, st.PromotionBlocked)
	}
	monitorSince := clk.Now()
	coverage(v1.Coverage{Since: metav1.NewTime(monitorSince), Pods: 2, Reported: 2, Complete: true})
	promoted(t, c, key.Name, "Learn to Monitor", "2 of 2 pods reported")

	// In Monitor a sidecar of the current revision audits a connection to api: it is listed as
	// would-deny. An audit from a sidecar still on the old revision is not (its rules are gone), and
	// every reported connection counts as a flow of the window.
	id := policyapi.Identity{Pod: client.ObjectKeyFromObject(web[0]), UID: web[0].UID, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}}
	entry := func(ip string, port uint16, count uint64, verdict policy.Verdict) policy.ReportEntry {
		return policy.ReportEntry{Direction: policy.Egress, Peer: netip.MustParseAddr(ip), Protocol: policy.TCP, Port: port, Count: count, Verdict: verdict}
	}
	clk.Step(10 * time.Minute)
	for _, r := range []policy.Report{
		{Revision: 3, Mode: policy.Monitor, Entries: []policy.ReportEntry{entry("10.2.0.5", 8000, 2, policy.Audit), entry("10.2.0.5", 8001, 5, policy.Allow)}},
		{Revision: 3, Mode: policy.Monitor, Entries: []policy.ReportEntry{entry("10.2.0.5", 8000, 1, policy.Audit)}},
		{Revision: 2, Mode: policy.Monitor, Entries: []policy.ReportEntry{entry("198.51.100.9", 443, 1, policy.Audit)}},
	} {
		if err := learner.Accept(ctx, id, &r); err != nil {
			t.Fatal(err)
		}
	}
	auditAt := clk.Now()
	learner.Flush(ctx)
	if err := c.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	wantDeny := []v1.FlowSummary{{Direction: policy.Egress, Peer: "workload:shop/Deployment/api", Address: "10.2.0.5", Protocol: policy.TCP,
		Port: 8000, Count: 3, LastSeen: metav1.NewTime(auditAt)}}
	if d := cmp.Diff(wantDeny, wp.Status.WouldDeny); d != "" || wp.Status.WouldDenyFlows != 1 {
		t.Errorf("wouldDeny %d flows, want 1 (-want +got):\n%s", wp.Status.WouldDenyFlows, d)
	}
	if wp.Status.Coverage.Flows != 9 {
		t.Errorf("coverage flows %d, want 9", wp.Status.Coverage.Flows)
	}

	// Two hours on, the quiet period after the audit is over, but the would-deny flow blocks Protect.
	st = reconcileAt(2*time.Hour+time.Minute, 3, web[0].Name, web[1].Name)
	if wp.Spec.Mode != policy.Monitor || !strings.Contains(st.PromotionBlocked, "1 flows Protect would deny") {
		t.Fatalf("would deny: mode %s, promotionBlocked %q; want Monitor, blocked by the flow", wp.Spec.Mode, st.PromotionBlocked)
	}
	if len(st.WouldDeny) != 1 || st.Coverage.ObservedHours != 2 || !st.Coverage.Complete {
		t.Errorf("would deny: %d listed, coverage %+v; want the flow kept and two complete hours", len(st.WouldDeny), st.Coverage)
	}

	// A rule for the flow restarts the window: the flow is gone with the old rules, every pod has its
	// sidecar, and the quiet period since the audit is over: Protect.
	addRule(t, c, key, v1.Rule{Name: "api", Origin: "user", Peers: []v1.Peer{{CIDR: "10.2.0.5/32"}}})
	st = reconcileAt(0, 4, web[0].Name, web[1].Name)
	if wp.Spec.Mode != policy.Protect || st.WouldDeny != nil || st.WouldDenyFlows != 0 {
		t.Fatalf("rules changed: mode %s, wouldDeny %v (%d); want Protect, none", wp.Spec.Mode, st.WouldDeny, st.WouldDenyFlows)
	}
	promoted(t, c, key.Name, "Monitor to Protect", "none Protect would deny")
}

// addRule adds an egress rule to the policy at key: a new generation.
func addRule(t *testing.T, c client.Client, key types.NamespacedName, r v1.Rule) {
	t.Helper()
	var wp v1.WorkloadPolicy
	if err := c.Get(context.Background(), key, &wp); err != nil {
		t.Fatal(err)
	}
	wp.Spec.Egress = append(wp.Spec.Egress, r)
	if err := c.Update(context.Background(), &wp); err != nil {
		t.Fatal(err)
	}
}

// owned waits until the cache names the owner of a pod address.
func owned(ctx context.Context, r client.Reader, ip string) error {
	o, err := resolve.OwnerOf(ctx, r, nil, netip.MustParseAddr(ip))
	if err != nil || o.Kind != resolve.OwnerWorkload {
		return fmt.Errorf("%s not owned by a workload yet (%v)", ip, err)
	}
	return nil
}

// promoted waits for a Promoted Event on the policy whose note contains every want.
func promoted(t *testing.T, c client.Client, policyName string, want ...string) {
	t.Helper()
	testutil.Await(t, "Promoted event", 10*time.Second, func() error {
		var list eventsv1.EventList
		if err := c.List(context.Background(), &list, client.InNamespace("shop")); err != nil {
			return err
		}
		var seen []string
	events:
		for _, e := range list.Items {
			if e.Regarding.Kind != "WorkloadPolicy" || e.Regarding.Name != policyName || e.Reason != ReasonPromoted || e.Type != "Normal" {
				continue
			}
			for _, w := range want {
				if !strings.Contains(e.Note, w) {
					seen = append(seen, e.Note)
					continue events
				}
			}
			return nil
		}
		return fmt.Errorf("no Promoted event with %q (saw %q)", want, seen)
	})
}

func TestMeasure(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	flow := func(peer string, seen time.Duration) v1.FlowSummary {
		return v1.FlowSummary{Direction: policy.Egress, Peer: peer, Count: 1, LastSeen: at(seen)}
	}
	type look struct {
		now               time.Duration
		generation        int64
		sidecars          int32
		pods, settled     int32
		observed, gap     int32
		complete          bool
		since             time.Duration
		wouldDeny, listed int32
	}
	tests := []struct {
		name  string
		deny  []v1.FlowSummary
		flows int32
		looks []look
	}{
		{"every pod reports: whole hours observed",
			nil, 0, []look{
				{now: 0, generation: 1, sidecars: 2, pods: 2, settled: 0, complete: true},
				{now: 59 * time.Minute, generation: 1, sidecars: 2, pods: 2, settled: 2, complete: true},
				{now: 3*time.Hour + time.Minute, generation: 1, sidecars: 2, pods: 2, settled: 2, observed: 3, complete: true},
			}},
		{"a gap counts its hour at once, and once",
			nil, 0, []look{
				{now: 0, generation: 1, sidecars: 2, pods: 2, settled: 2, complete: true},
				{now: 90 * time.Minute, generation: 1, sidecars: 1, pods: 2, settled: 2, observed: 0, gap: 2},
				{now: 100 * time.Minute, generation: 1, sidecars: 1, pods: 2, settled: 2, observed: 0, gap: 2},
				{now: 150 * time.Minute, generation: 1, sidecars: 2, pods: 2, settled: 2, observed: 0, gap: 2},
				{now: 200 * time.Minute, generation: 1, sidecars: 2, pods: 2, settled: 2, observed: 1, gap: 2},
			}},
		{"a young pod has time to subscribe, but is not reported yet",
			nil, 0, []look{
				{now: 0, generation: 1, sidecars: 2, pods: 3, settled: 2, observed: 0, gap: 0},
			}},
		{"no pod is no coverage",
			nil, 0, []look{
				{now: 0, generation: 1, pods: 0, gap: 1},
			}},
		{"a spec change (a new generation) restarts the window and drops older would-deny flows",
			[]v1.FlowSummary{flow("b", 2*time.Hour), flow("a", time.Hour)}, 40, []look{
				{now: 0, generation: 1, sidecars: 1, pods: 1, settled: 1, complete: true, wouldDeny: 40, listed: 2},
				{now: 90 * time.Minute, generation: 2, sidecars: 1, pods: 1, settled: 1, complete: true, since: 90 * time.Minute, wouldDeny: 1, listed: 1},
				{now: 3 * time.Hour, generation: 3, sidecars: 1, pods: 1, settled: 1, complete: true, since: 3 * time.Hour},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &v1.WorkloadPolicyStatus{ModeSince: &metav1.Time{Time: t0}, WouldDeny: tc.deny, WouldDenyFlows: tc.flows}
			for i, l := range tc.looks {
				measure(st, l.generation, observed{pods: l.pods, reported: l.sidecars, full: l.sidecars >= l.settled}, t0.Add(l.now))
				c := st.Coverage
				if c.ObservedHours != l.observed || c.GapHours != l.gap || c.Complete != l.complete || !c.Since.Time.Equal(t0.Add(l.since)) ||
					c.Pods != l.pods || c.Reported != min(l.pods, l.sidecars) {
					t.Errorf("look %d: coverage %+v, want %+v", i, c, l)
				}
				if st.WouldDenyFlows != l.wouldDeny || int32(len(st.WouldDeny)) != l.listed {
					t.Errorf("look %d: %d would-deny flows, %d listed; want %d, %d", i, st.WouldDenyFlows, len(st.WouldDeny), l.wouldDeny, l.listed)
				}
			}
		})
	}
}

// TestObserve counts a workload's pods with a subscribed sidecar by name when every replica names its
// subscribers' pods, and by the replicas' counts when one does not.
func TestObserve(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pod := func(name string, age time.Duration, mod func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-age))}}
		if mod != nil {
			mod(&p)
		}
		return p
	}
	pods := []corev1.Pod{
		pod("a", time.Hour, nil),
		pod("b", time.Hour, nil),
		pod("young", time.Second, nil), // may have no sidecar yet
		pod("going", time.Hour, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: now} }),
		pod("done", time.Hour, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), // not counted
	}
	many := make([]string, v1.MaxReplicaPods)
	for i := range many {
		many[i] = fmt.Sprintf("x-%03d", i)
	}
	for _, tc := range []struct {
		name     string
		replicas []v1.ReplicaStatus
		want     observed
	}{
		{"no replica", nil, observed{pods: 4}},
		{"by name, the settled pods covered", []v1.ReplicaStatus{{Sidecars: 1, Pods: []string{"a"}}, {Sidecars: 2, Pods: []string{"b", "young"}}},
			observed{pods: 4, reported: 3, full: true}},
		{"by name, a pod at two replicas counts once and a gone pod not at all",
			[]v1.ReplicaStatus{{Sidecars: 2, Pods: []string{"a", "gone"}}, {Sidecars: 1, Pods: []string{"a"}}},
			observed{pods: 4, reported: 1}},
		{"a replica that names none: by count", []v1.ReplicaStatus{{Sidecars: 1, Pods: []string{"a"}}, {Sidecars: 1}},
			observed{pods: 4, reported: 2, full: true}},
		{"a replica with more pods than it may name: by count", []v1.ReplicaStatus{{Sidecars: 300, Pods: many}},
			observed{pods: 4, reported: 4, full: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Promoter{opts: PromoteOptions{Stale: 30 * time.Second}}
			if got := p.observe(tc.replicas, pods, now); got != tc.want {
				t.Errorf("observe = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSightingAddTo(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	st := &v1.WorkloadPolicyStatus{Revision: 5}
	s := &sighting{first: t0, flows: 3, deny: map[flowKey]*v1.FlowSummary{}}
	if s.addTo(st) {
		t.Fatal("added before the promoter opened a window")
	}
	if s.due(t0.Add(countEvery-time.Second)) || !s.due(t0.Add(countEvery)) {
		t.Error("connections alone are due for a write only after countEvery")
	}
	st.Coverage = &v1.Coverage{Since: seen(time.Minute)}
	deny := func(rev int64, port int32, at time.Duration) {
		s.add(0, map[flowKey]*v1.FlowSummary{{rev, policy.Egress, "cidr:192.0.2.1/32", policy.TCP, port}: {Direction: policy.Egress,
			Peer: "cidr:192.0.2.1/32", Protocol: policy.TCP, Port: port, Count: 1, LastSeen: seen(at)}})
	}
	deny(4, 1, 2*time.Minute) // an older revision's
	if !s.due(t0) {
		t.Error("a would-deny flow is not due for a write at once")
	}
	deny(5, 2, 0) // before the window
	for p := range MaxWouldDeny + 3 {
		deny(6, int32(100+p), time.Duration(10+p)*time.Minute) // a later revision than status knows
	}
	deny(6, 100, time.Hour) // seen again, latest
	if !s.addTo(st) {
		t.Fatal("nothing added")
	}
	if st.Coverage.Flows != 0 {
		t.Errorf("flows %d counted from reports before the window, want 0", st.Coverage.Flows)
	}
	if len(st.WouldDeny) != MaxWouldDeny || st.WouldDenyFlows != MaxWouldDeny+3 {
		t.Fatalf("%d listed, %d counted; want %d, %d", len(st.WouldDeny), st.WouldDenyFlows, MaxWouldDeny, MaxWouldDeny+3)
	}
	if f := st.WouldDeny[0]; f.Port != 100 || f.Count != 2 || !f.LastSeen.Equal(&metav1.Time{Time: t0.Add(time.Hour)}) {
		t.Errorf("first listed %+v, want port 100 seen twice, last at 1h", f)
	}
	// Listed: port 100 (seen again), then 134 down to 104; 101 to 103, the oldest, fell off.
	if last := st.WouldDeny[MaxWouldDeny-1]; last.Port != 104 {
		t.Errorf("last listed port %d, want 104 (most recent first, the oldest fell off)", last.Port)
	}
	// Beyond maxPendingDenies flows are counted, not named.
	s = &sighting{first: t0.Add(time.Hour), flows: 7, deny: map[flowKey]*v1.FlowSummary{}}
	for p := range maxPendingDenies + 2 {
		deny(5, int32(1000+p), time.Hour)
	}
	before := st.WouldDenyFlows
	s.addTo(st)
	if st.WouldDenyFlows != before+maxPendingDenies+2 || st.Coverage.Flows != 7 {
		t.Errorf("would-deny flows %d (was %d), window flows %d; want %d more and 7", st.WouldDenyFlows, before, st.Coverage.Flows, maxPendingDenies+2)
	}
}

// FuzzMeasure looks at a window at arbitrary times, generations, pods and subscribers, and checks what
// must hold whatever happens: every whole hour counted once (the one under way at most in advance),
// no more pods reported than run, complete only without a gap, and never fewer would-deny flows
// counted than listed.
func FuzzMeasure(f *testing.F) {
	f.Add([]byte{0, 1, 2, 2, 2, 61, 1, 2, 1, 2, 3, 2, 2, 2, 2})
	f.Add([]byte{10, 0, 0, 0, 0, 200, 5, 3, 3, 1})
	f.Fuzz(func(t *testing.T, steps []byte) {
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		st := &v1.WorkloadPolicyStatus{ModeSince: &metav1.Time{Time: t0}, WouldDenyFlows: 3,
			WouldDeny: []v1.FlowSummary{{Peer: "a", LastSeen: metav1.NewTime(t0)}, {Peer: "b", LastSeen: metav1.NewTime(t0.Add(time.Hour))}}}
		now := t0
		for ; len(steps) >= 5; steps = steps[5:] {
			now = now.Add(time.Duration(steps[0]) * time.Minute)
			if steps[1]%7 == 0 {
				st.ModeSince = &metav1.Time{Time: now} // a mode change
			}
			pods := int32(steps[3] % 5)
			measure(st, int64(steps[1]%4), observed{pods: pods, reported: int32(steps[2] % 5), full: steps[4]%2 == 0}, now)
			c := st.Coverage
			elapsed := int32(now.Sub(c.Since.Time) / time.Hour)
			if n := c.ObservedHours + c.GapHours; n != elapsed && n != elapsed+1 {
				t.Fatalf("at %v: %d hours counted of a window %d whole hours long (%+v)", now.Sub(t0), n, elapsed, c)
			}
			if c.Since.After(now) || c.Reported > c.Pods || c.Pods != pods {
				t.Fatalf("at %v: coverage %+v with %d pods", now.Sub(t0), c, pods)
			}
			if c.Complete && (c.GapHours > 0 || c.Reported != c.Pods || c.Pods == 0) {
				t.Fatalf("at %v: complete with a gap or a silent pod: %+v", now.Sub(t0), c)
			}
			if int(st.WouldDenyFlows) < len(st.WouldDeny) {
				t.Fatalf("%d would-deny flows counted, %d listed", st.WouldDenyFlows, len(st.WouldDeny))
			}
		}
	})
}
