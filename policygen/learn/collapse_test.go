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
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/export"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// TestLearnerCollapsesNamespace runs the learner against a real API server with CollapseNamespace 3:
// three workloads of namespace data calling web's port become one rule for data on that port, a
// fourth adds nothing, and web's own namespace and a lone caller of another stay named. The rule
// written resolves to exactly data's pods and exports as a selector of exactly that namespace.
func TestLearnerCollapsesNamespace(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	var learner *Learner
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		learner = NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(),
			LearnerOptions{Interval: time.Hour, CollapseNamespace: 3}, testr.New(t))
		return resolve.Index(ctx, mgr.GetFieldIndexer())
	})
	for _, ns := range []string{"shop", "data", "other"} {
		pgtest.Namespace(t, c, ns, nil)
	}
	web := k.Deployment("shop", "web", "", "10.1.0.1")
	ips := map[string]string{}
	for _, w := range []struct{ ns, name, ip string }{
		{"shop", "s1", "10.1.0.2"}, {"shop", "s2", "10.1.0.3"}, {"shop", "s3", "10.1.0.4"},
		{"data", "a", "10.2.0.1"}, {"data", "b", "10.2.0.2"}, {"data", "c", "10.2.0.3"}, {"data", "d", "10.2.0.4"},
		{"other", "x", "10.3.0.1"},
	} {
		k.Deployment(w.ns, w.name, "", w.ip)
		ips[w.name] = w.ip
	}
	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	mine := v1.Rule{Name: "mine", Origin: "user", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{Namespace: "data",
		WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "a"}}}}, Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Learn, Ingress: []v1.Rule{mine}}})
	testutil.Eventually(t, 10*time.Second, func() error {
		for name, ip := range ips {
			var pods corev1.PodList
			if err := mgr.GetCache().List(ctx, &pods, client.MatchingFields{resolve.IPIndex: ip}); err != nil || len(pods.Items) != 1 {
				return fmt.Errorf("pod of %s (%s) not in cache (%v)", name, ip, err)
			}
		}
		return nil
	})

	id := policyapi.Identity{Pod: client.ObjectKeyFromObject(web[0]), UID: web[0].UID, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}}
	report := func(calls ...string) {
		t.Helper()
		var r policy.Report
		for _, call := range calls {
			var name string
			var port uint16
			if _, err := fmt.Sscanf(call, "%s %d", &name, &port); err != nil {
				t.Fatal(err)
			}
			r.Entries = append(r.Entries, policy.ReportEntry{Direction: policy.Ingress, Peer: netip.MustParseAddr(ips[name]),
				Protocol: policy.TCP, Port: port, Count: 1, Verdict: policy.Allow})
		}
		if err := learner.Accept(ctx, id, &r); err != nil {
			t.Fatal(err)
		}
		learner.Flush(ctx)
	}
	caller := func(ns, name string, port int32) v1.Rule {
		p := v1.Peer{Workload: &v1.WorkloadPeer{Namespace: ns, WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: name}}}
		return v1.Rule{Name: RuleName(p), Origin: "learned", Peers: []v1.Peer{p}, Ports: []v1.Port{{Protocol: "TCP", Port: port}}}
	}
	data := v1.Rule{Name: "l-namespace-data", Origin: "learned", Peers: []v1.Peer{NamespacePeer("data")}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}
	// In address order: shop's callers, then data's (a's 8080 leaves with c), then other's.
	want := []v1.Rule{mine, caller("", "s1", 8080), caller("", "s2", 8080), caller("", "s3", 8080), caller("data", "a", 9090), data, caller("other", "x", 8080)}
	var wp v1.WorkloadPolicy
	check := func(what string) {
		t.Helper()
		if err := c.Get(ctx, key, &wp); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, wp.Spec.Ingress); d != "" {
			t.Errorf("%s: ingress (-want +got):\n%s", what, d)
		}
		if wp.Status.LearnedFlows != 8 {
			t.Errorf("%s: learnedFlows %d, want 8", what, wp.Status.LearnedFlows)
		}
	}
	report("s1 8080", "s2 8080", "s3 8080", "a 8080", "a 9090", "b 8080", "c 8080", "x 8080", "a 5432")
	check("collapsed")
	generation := wp.Generation
	// d is new, b known: both fall under the namespace rule, and nothing is written.
	report("d 8080", "b 8080")
	check("a later caller")
	if wp.Generation != generation {
		t.Errorf("generation %d, want %d: the policy was written again", wp.Generation, generation)
	}

	// The rule means data's pods, and only them, where policygen resolves it for the sidecar...
	testutil.Eventually(t, 10*time.Second, func() error {
		var cached v1.WorkloadPolicy
		if err := mgr.GetCache().Get(ctx, key, &cached); err != nil || cached.Generation != generation {
			return fmt.Errorf("policy generation %d not in cache (%v)", generation, err)
		}
		return nil
	})
	hub := resolve.NewHub(mgr.GetCache(), resolve.HubOptions{}, testr.New(t))
	snap, release, err := hub.Acquire(ctx, id.Workload)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	i := slices.IndexFunc(snap.Policy.Ingress, func(r policy.Rule) bool { return r.ID == "ingress/"+data.Name })
	if i < 0 {
		t.Fatalf("resolved ingress %+v has no rule %s", snap.Policy.Ingress, data.Name)
	}
	var dataPods []netip.Prefix
	for _, name := range []string{"a", "b", "c", "d"} {
		dataPods = append(dataPods, netip.MustParsePrefix(ips[name]+"/32"))
	}
	got := snap.Policy.Ingress[i]
	if d := cmp.Diff(dataPods, got.CIDRs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" || got.Peer != "selector:namespace(kubernetes.io/metadata.name=data)" {
		t.Errorf("resolved %s: peer %q, addresses (-want +got):\n%s", data.Name, got.Peer, d)
	}
	// ...and in the NetworkPolicy it exports: every pod of data, no other namespace's.
	np, _, err := export.Build(ctx, c, &wp)
	if err != nil {
		t.Fatal(err)
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(8080)
	wantNP := networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "data"}}}}}
	if !slices.ContainsFunc(np.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool { return equality.Semantic.DeepEqual(r, wantNP) }) {
		t.Errorf("exported ingress %+v has no rule %+v", np.Spec.Ingress, wantNP)
	}
}
