package learn

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/generator"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// TestLearnedCallersNarrowServiceIngress runs the learner, the generator and the promoter (with an
// injected clock) against a real API server: in Learn the callers of a Service's port are learned
// through its open manifest rule, and once the policy is promoted to Monitor the open rule no longer
// holds that port; a public Service's port stays open, and says so. A mesh proxy's loopback deny
// loses the port the pod was seen using in Learn.
func TestLearnedCallersNarrowServiceIngress(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var learner *Learner
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		learner = NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), LearnerOptions{Clock: clk, Interval: time.Hour}, testr.New(t))
		if err := generator.New(mgr.GetClient(), generator.Options{APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
			return err
		}
		return resolve.Index(ctx, mgr.GetFieldIndexer())
	})
	pgtest.Namespace(t, c, "shop", map[string]string{generator.InjectLabel: "enabled"})
	k.Deployment("shop", "client", "", "10.1.0.5")
	labels := map[string]string{"app": "web"}
	tpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}, {Name: "istio-proxy", Image: "proxy"}}}}
	d := k.Create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}})
	// One running pod, whose sidecar the promotion's coverage counts.
	yes := true
	rs := k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-5d8f", Labels: labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: d.GetUID(), Controller: &yes}}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}})
	k.SetIP(k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-5d8f-0", Labels: labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f", UID: rs.GetUID(), Controller: &yes}}},
		Spec: tpl.Spec}).(*corev1.Pod), "10.1.0.9")
	k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pub"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: labels, Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}}}})

	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	open := []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}
	tcp := func(ports ...int32) []v1.Port {
		var out []v1.Port
		for _, p := range ports {
			out = append(out, v1.Port{Protocol: "TCP", Port: p})
		}
		return out
	}
	svcWeb := v1.Rule{Name: "m-svc-web", Origin: "manifest", Peers: open, Ports: tcp(8080)}
	svcPub := v1.Rule{Name: "m-svc-pub", Origin: "manifest", Peers: open, Ports: tcp(8443)}
	pubOpen := v1.OpenPort{Rule: "m-svc-pub", Service: "shop/pub", Protocol: "TCP", Port: 8443, Reason: v1.OpenPublic}
	webOpen := v1.OpenPort{Rule: "m-svc-web", Service: "shop/web", Protocol: "TCP", Port: 8080}
	var wp v1.WorkloadPolicy
	await := func(what string, ingress []v1.Rule, loopback []v1.LoopbackRule, openPorts []v1.OpenPort) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			if err := c.Get(ctx, key, &wp); err != nil {
				return err
			}
			if d := cmp.Diff(ingress, wp.Spec.Ingress); d != "" {
				return fmt.Errorf("%s: ingress (-want +got):\n%s", what, d)
			}
			if d := cmp.Diff(loopback, wp.Spec.Loopback); d != "" {
				return fmt.Errorf("%s: loopback (-want +got):\n%s", what, d)
			}
			if d := cmp.Diff(openPorts, wp.Status.OpenPorts); d != "" {
				return fmt.Errorf("%s: status.openPorts (-want +got):\n%s", what, d)
			}
			return nil
		})
	}
	istio := func(ports ...int32) v1.LoopbackRule {
		return v1.LoopbackRule{Name: "m-istio-proxy", Origin: "manifest", Action: "deny", Ports: tcp(ports...)}
	}
	webOpen.Reason = v1.OpenLearning
	await("generated", []v1.Rule{svcPub, svcWeb}, []v1.LoopbackRule{istio(15000, 15004, 15020, 15021, 15090)}, []v1.OpenPort{pubOpen, webOpen})

	testutil.Eventually(t, 10*time.Second, func() error {
		var pods corev1.PodList
		if err := mgr.GetCache().List(ctx, &pods, client.MatchingFields{resolve.IPIndex: "10.1.0.5"}); err != nil || len(pods.Items) != 1 {
			return fmt.Errorf("pod 10.1.0.5 not in cache (%v)", err)
		}
		return nil
	})
	// The client calls web's Service port, someone outside the public one, and a process in the pod
	// the proxy's admin port: each allowed and recorded, as Learn reports them.
	id := policyapi.Identity{Pod: types.NamespacedName{Namespace: "shop", Name: "web-0"}, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}}
	entry := func(dir policy.Direction, ip string, port uint16, verdict policy.Verdict) policy.ReportEntry {
		return policy.ReportEntry{Direction: dir, Peer: netip.MustParseAddr(ip), Protocol: policy.TCP, Port: port, Count: 1, Verdict: verdict}
	}
	r := policy.Report{Entries: []policy.ReportEntry{entry(policy.Ingress, "10.1.0.5", 8080, policy.Allow),
		entry(policy.Ingress, "203.0.113.9", 8443, policy.Allow), entry(policy.Loopback, "127.0.0.1", 15000, policy.Allow)}}
	if err := learner.Accept(ctx, id, &r); err != nil {
		t.Fatal(err)
	}
	learner.Flush(ctx)
	caller := v1.Rule{Name: "l-deployment-client", Origin: "learned", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{
		WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "client"}}}}, Ports: tcp(8080)}
	admin := v1.LoopbackRule{Name: LoopbackRuleName, Origin: "learned", Action: "allow", Ports: tcp(15000)}
	await("learned", []v1.Rule{caller, svcPub, svcWeb}, []v1.LoopbackRule{admin, istio(15004, 15020, 15021, 15090)}, []v1.OpenPort{pubOpen, webOpen})
	if wp.Status.LearnedFlows != 2 {
		t.Errorf("learnedFlows %d, want 2 (the caller and the loopback port, not the public Service's client)", wp.Status.LearnedFlows)
	}

	// An hour without learning promotes to Monitor: web's port is narrowed to the client, pub's stays.
	prom := NewPromoter(c, mgr.GetCache(), PromoteOptions{LearnQuiet: time.Hour, Clock: clk})
	for _, step := range []time.Duration{0, time.Hour} {
		clk.Step(step)
		// The generator writes the policy too: a conflict is retried, as the controller would.
		testutil.Eventually(t, 10*time.Second, func() error {
			// web's one pod has its sidecar subscribed: the coverage a promotion needs.
			subscribe(t, c, key, 1, 1, clk.Now())
			_, err := prom.Reconcile(ctx, reconcile.Request{NamespacedName: key})
			return err
		})
	}
	await("promoted to Monitor", []v1.Rule{caller, svcPub}, []v1.LoopbackRule{admin, istio(15004, 15020, 15021, 15090)}, []v1.OpenPort{pubOpen})
	if wp.Spec.Mode != policy.Monitor {
		t.Fatalf("mode %s, want Monitor", wp.Spec.Mode)
	}

	// In Protect, a namespace user who marks the Service public does not reopen the port by herself:
	// it waits as a proposal.
	edit := func(f func(*v1.WorkloadPolicy)) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, key, &wp); err != nil {
				return err
			}
			f(&wp)
			return c.Update(ctx, &wp)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	edit(func(p *v1.WorkloadPolicy) { p.Spec.Mode = policy.Protect })
	var web corev1.Service
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &web); err != nil {
		t.Fatal(err)
	}
	web.Annotations = map[string]string{v1.PublicAnnotation: "true"}
	if err := c.Update(ctx, &web); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		if !slices.ContainsFunc(wp.Status.Proposals, func(p v1.Proposal) bool { return p.Rule.Name == svcWeb.Name }) {
			return fmt.Errorf("proposals %+v, want one for %s", wp.Status.Proposals, svcWeb.Name)
		}
		return nil
	})
	await("public in Protect", []v1.Rule{caller, svcPub}, []v1.LoopbackRule{admin, istio(15004, 15020, 15021, 15090)}, []v1.OpenPort{pubOpen})
	delete(web.Annotations, v1.PublicAnnotation)
	if err := c.Update(ctx, &web); err != nil {
		t.Fatal(err)
	}

	// Without its caller rule the port has no observed caller: open again (in Monitor, where manifest
	// rules apply as derived), and status says why.
	edit(func(p *v1.WorkloadPolicy) {
		p.Spec.Mode = policy.Monitor
		p.Spec.Ingress = slices.DeleteFunc(p.Spec.Ingress, func(r v1.Rule) bool { return r.Name == caller.Name })
	})
	webOpen.Reason = v1.OpenNoCallers
	await("caller rule deleted", []v1.Rule{svcPub, svcWeb}, []v1.LoopbackRule{admin, istio(15004, 15020, 15021, 15090)}, []v1.OpenPort{pubOpen, webOpen})
}
