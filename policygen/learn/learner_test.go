package learn

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

func TestLearnerAndPromoter(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var learner *Learner
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		learner = NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), LearnerOptions{Clock: clk, Interval: time.Hour}, testr.New(t))
		return resolve.Index(ctx, mgr.GetFieldIndexer())
	})
	pgtest.Namespace(t, c, "shop", nil)
	pgtest.Namespace(t, c, "data", nil)
	k.Deployment("shop", "api", "", "10.1.0.5")
	web := k.Deployment("shop", "web", "", "10.1.0.1")
	db := k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "data", Name: "db"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}}).(*corev1.Service)
	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Learn, AutoProtect: true,
			Egress: []v1.Rule{{Name: "mine", Origin: "user", Peers: []v1.Peer{{CIDR: "192.0.2.0/24"}}}}}})

	// Wait for the cache to know the peers the report names.
	testutil.Eventually(t, 10*time.Second, func() error {
		var pods corev1.PodList
		if err := mgr.GetCache().List(ctx, &pods, client.MatchingFields{resolve.IPIndex: "10.1.0.5"}); err != nil || len(pods.Items) != 1 {
			return fmt.Errorf("pod 10.1.0.5 not in cache (%v)", err)
		}
		var svcs corev1.ServiceList
		if err := mgr.GetCache().List(ctx, &svcs, client.MatchingFields{resolve.IPIndex: db.Spec.ClusterIP}); err != nil || len(svcs.Items) != 1 {
			return fmt.Errorf("service not in cache (%v)", err)
		}
		return nil
	})
	id := policyapi.Identity{Pod: client.ObjectKeyFromObject(web[0]), UID: web[0].UID, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}}
	entry := func(dir policy.Direction, ip string, port uint16, verdict policy.Verdict) policy.ReportEntry {
		return policy.ReportEntry{Direction: dir, Peer: netip.MustParseAddr(ip), Protocol: policy.TCP, Port: port, Count: 2, Verdict: verdict}
	}
	named := func(ip string, port uint16, name string) policy.ReportEntry {
		e := entry(policy.Egress, ip, port, policy.Allow)
		e.Name = name
		return e
	}
	// A DNS query's verdict names what the pod asked for, not its resolver (here outside the cluster).
	query := func(ip, name string) policy.ReportEntry {
		e := named(ip, 53, name)
		e.Protocol, e.Evaluator = policy.UDP, "dns-query"
		return e
	}
	reports := []policy.Report{
		{Entries: []policy.ReportEntry{entry(policy.Egress, "10.1.0.5", 8000, policy.Allow), entry(policy.Egress, db.Spec.ClusterIP, 5432, policy.Allow)}},
		{Entries: []policy.ReportEntry{entry(policy.Egress, "10.1.0.5", 8001, policy.Allow), entry(policy.Ingress, "198.51.100.4", 8080, policy.Allow),
			entry(policy.Egress, "192.0.2.9", 443, policy.Allow), entry(policy.Loopback, "127.0.0.1", 15000, policy.Allow)}},
		// External addresses the pod resolved are learned by name, the addresses of one name as one rule;
		// an in-cluster peer reached by a name is learned by identity; a name that is no valid name (a
		// report's validation refuses it: here it comes straight to the learner) falls back to the address.
		{Entries: []policy.ReportEntry{named("203.0.113.10", 443, "api.stripe.com"), named("2001:db8::10", 443, "api.stripe.com"),
			named("203.0.113.11", 443, "api.stripe.com"), named("10.1.0.5", 8000, "api.shop.svc.cluster.local"),
			named("203.0.113.12", 25, "Not A Name"), query("198.51.100.53", "anything.example.org")}},
	}
	for _, r := range reports {
		if err := learner.Accept(ctx, id, &r); err != nil {
			t.Fatal(err)
		}
	}
	learner.Flush(ctx)
	var wp v1.WorkloadPolicy
	if err := c.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	wantIngress := []v1.Rule{{Name: "l-cidr-198-51-100-4-32", Origin: "learned", Peers: []v1.Peer{{CIDR: "198.51.100.4/32"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}}
	wantEgress := []v1.Rule{
		{Name: "mine", Origin: "user", Peers: []v1.Peer{{CIDR: "192.0.2.0/24"}}},
		// sorted by address: the Service's cluster IP (10.0.0.x) comes first
		{Name: "l-svc-db.data", Origin: "learned", Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "data", Name: "db"}}}, Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
		{Name: "l-deployment-api", Origin: "learned", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}},
			Ports: []v1.Port{{Protocol: "TCP", Port: 8000, EndPort: 8001}}},
		{Name: "l-cidr-198-51-100-53-32", Origin: "learned", Peers: []v1.Peer{{CIDR: "198.51.100.53/32"}}, Ports: []v1.Port{{Protocol: "UDP", Port: 53}}},
		{Name: "l-fqdn-api.stripe.com", Origin: "learned", Peers: []v1.Peer{{FQDN: "api.stripe.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
		{Name: "l-cidr-203-0-113-12-32", Origin: "learned", Peers: []v1.Peer{{CIDR: "203.0.113.12/32"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 25}}},
	}
	if d := cmp.Diff(wantIngress, wp.Spec.Ingress); d != "" {
		t.Errorf("ingress (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantEgress, wp.Spec.Egress); d != "" {
		t.Errorf("egress (-want +got):\n%s", d)
	}
	if wp.Status.LearnedFlows != 7 || wp.Status.LastLearned == nil || !wp.Status.LastLearned.Time.Equal(clk.Now()) {
		t.Errorf("status learnedFlows %d lastLearned %v, want 7 at %v", wp.Status.LearnedFlows, wp.Status.LastLearned, clk.Now())
	}

	// Promotion with the injected clock: Learn -> Monitor after an hour without learning, Monitor ->
	// Protect after two hours without audits; an audit restarts the Monitor clock, and blocks the
	// promotion until the rules change (a rule for it: a new generation) and restart the window
	// (evidence_test.go).
	prom := NewPromoter(c, mgr.GetCache(), PromoteOptions{LearnQuiet: time.Hour, MonitorQuiet: 2 * time.Hour, Clock: clk})
	mode := func() policy.Mode {
		t.Helper()
		if _, err := prom.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if err := c.Get(ctx, key, &wp); err != nil {
			t.Fatal(err)
		}
		return wp.Spec.Mode
	}
	steps := []struct {
		advance     time.Duration
		audit, rule bool
		revision    int64
		want        policy.Mode
	}{
		{0, false, false, 1, policy.Learn}, // starts the clock
		{59 * time.Minute, false, false, 1, policy.Learn},
		{time.Minute, false, false, 1, policy.Monitor},
		{90 * time.Minute, true, false, 1, policy.Monitor}, // an audit at 1h30 into Monitor
		{90 * time.Minute, false, true, 2, policy.Monitor},
		{30 * time.Minute, false, false, 2, policy.Protect},
	}
	for i, s := range steps {
		clk.Step(s.advance)
		if s.rule {
			addRule(t, c, key, v1.Rule{Name: "smtp", Origin: "user", Peers: []v1.Peer{{CIDR: "203.0.113.1/32"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 25}}})
		}
		subscribe(t, c, key, 1, s.revision, clk.Now())
		if s.audit {
			r := policy.Report{Revision: s.revision, Entries: []policy.ReportEntry{entry(policy.Egress, "203.0.113.1", 25, policy.Audit)}}
			if err := learner.Accept(ctx, id, &r); err != nil {
				t.Fatal(err)
			}
			learner.Flush(ctx)
		}
		if got := mode(); got != s.want {
			t.Fatalf("step %d: mode %s, want %s (status %+v)", i, got, s.want, wp.Status)
		}
	}
	if wp.Status.Violations != 2 || wp.Status.Rules != 8 || wp.Status.Mode != policy.Protect {
		t.Errorf("status %+v, want 2 violations, 8 rules, mode Protect", wp.Status)
	}
	// Protect learns nothing.
	r := policy.Report{Entries: []policy.ReportEntry{entry(policy.Egress, "203.0.113.2", 25, policy.Deny)}}
	if err := learner.Accept(ctx, id, &r); err != nil {
		t.Fatal(err)
	}
	learner.Flush(ctx)
	if err := c.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if len(wp.Spec.Egress) != 7 || wp.Status.Violations != 4 {
		t.Errorf("in Protect: %d egress rules and %d violations, want 7 and 4", len(wp.Spec.Egress), wp.Status.Violations)
	}
}
