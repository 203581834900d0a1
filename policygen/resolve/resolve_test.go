package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/workload"
)

func pfx(s ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestHubResolvesAndRevises(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	var hub *Hub
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		if err := Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub = NewHub(mgr.GetCache(), HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		return mgr.Add(hub)
	})
	pgtest.Namespace(t, c, "shop", map[string]string{"team": "shop"})
	pgtest.Namespace(t, c, "ops", map[string]string{"team": "ops"})
	apiPods := k.Deployment("shop", "api", "", "10.1.0.1", "10.1.0.2")
	k.Deployment("ops", "prom", "", "10.2.0.1")
	k.Deployment("shop", "web", "", "10.1.0.9")
	svc := k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}}}).(*corev1.Service)
	node := k.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}).(*corev1.Node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}, {Type: corev1.NodeHostName, Address: "node-1"}}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	k.Create(&v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
		Spec: v1.WorkloadPolicySpec{
			Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Protect,
			Ingress: []v1.Rule{
				{Name: "probes", Origin: "manifest", Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
				{Name: "metrics", Peers: []v1.Peer{{Selector: &v1.SelectorPeer{NamespaceSelector: &v1.LabelSelector{MatchLabels: map[string]v1.LabelValue{"team": "ops"}}}}}},
			},
			Egress: []v1.Rule{
				{Name: "api", Origin: "learned", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 8000}}},
				{Name: "api-svc", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "api"}}, {CIDR: "172.16.0.0/12"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 80}}},
			},
			Loopback: []v1.LoopbackRule{{Name: "admin", Action: "deny", Ports: []v1.Port{{Protocol: "TCP", Port: 15000}}}},
		},
	})

	web := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}
	clusterIP := svc.Spec.ClusterIP + "/32"
	want := func(apiIPs ...string) *policy.Policy {
		names := map[netip.Addr]string{
			netip.MustParseAddr("192.168.1.10"):     "node:node-1",
			netip.MustParseAddr("10.2.0.1"):         "workload:ops/Deployment/prom",
			netip.MustParseAddr(svc.Spec.ClusterIP): "service:shop/api",
		}
		for _, ip := range apiIPs {
			names[netip.MustParseAddr(ip)] = "workload:shop/Deployment/api"
		}
		var apiCIDRs []string
		for _, ip := range apiIPs {
			apiCIDRs = append(apiCIDRs, ip+"/32")
		}
		return &policy.Policy{
			Namespace: "shop", Workload: "Deployment/web", Mode: policy.Protect,
			Ingress: []policy.Rule{
				{ID: "ingress/probes", Origin: "manifest", Peer: "nodes", CIDRs: pfx("192.168.1.10/32"), Ports: []policy.PortRange{{Protocol: "TCP", Port: 8080}}},
				{ID: "ingress/metrics", Origin: "user", Peer: "selector:namespace(team=ops)", CIDRs: pfx("10.2.0.1/32")},
			},
			Egress: []policy.Rule{
				{ID: "egress/api", Origin: "learned", Peer: "workload:shop/Deployment/api", CIDRs: pfx(apiCIDRs...), Ports: []policy.PortRange{{Protocol: "TCP", Port: 8000}}},
				{ID: "egress/api-svc", Origin: "user", Peer: "service:shop/api,cidr:172.16.0.0/12",
					CIDRs: pfx(append(append([]string{clusterIP}, apiCIDRs...), "172.16.0.0/12")...), Ports: []policy.PortRange{{Protocol: "TCP", Port: 80}}},
			},
			Loopback: []policy.LoopbackRule{{ID: "loopback/admin", Origin: "user", Action: "deny", Ports: []policy.PortRange{{Protocol: "TCP", Port: 15000}}}},
			Names:    names,
		}
	}
	acquire := func() (Snapshot, error) {
		snap, release, err := hub.Acquire(ctx, web)
		release()
		return snap, err
	}
	current := func() Snapshot {
		t.Helper()
		snap, err := acquire()
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		return snap
	}
	ignoreRev := cmp.Options{cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Revision" }, cmp.Ignore()),
		cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})}
	var first Snapshot
	testutil.Eventually(t, 10*time.Second, func() error {
		var err error
		if first, err = acquire(); err != nil {
			return err
		}
		if d := cmp.Diff(want("10.1.0.1", "10.1.0.2"), first.Policy, ignoreRev); d != "" {
			return fmt.Errorf("resolved (-want +got):\n%s", d)
		}
		return nil
	})
	if first.Policy.Revision <= 0 {
		t.Errorf("revision %d, want > 0", first.Policy.Revision)
	}

	// A pod IP change changes set elements under the same rule ids, with a higher revision.
	k.SetIP(apiPods[1], "10.1.0.3")
	select {
	case <-first.Changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no new snapshot after a peer's IP changed")
	}
	second := current()
	if d := cmp.Diff(want("10.1.0.1", "10.1.0.3"), second.Policy, ignoreRev); d != "" {
		t.Errorf("after IP change (-want +got):\n%s", d)
	}
	if second.Policy.Revision <= first.Policy.Revision || second.Hash == first.Hash {
		t.Errorf("revision %d -> %d, hash %s -> %s: want both to change", first.Policy.Revision, second.Policy.Revision, first.Hash, second.Hash)
	}

	// A change that does not touch the resolved form is recomputed but keeps the revision.
	before := hub.Recomputes()
	apiPods[0].Labels["extra"] = "yes"
	if err := c.Update(ctx, apiPods[0]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var pod corev1.Pod
		if err := mgr.GetClient().Get(ctx, client.ObjectKeyFromObject(apiPods[0]), &pod); err != nil || pod.Labels["extra"] != "yes" {
			return fmt.Errorf("cache has not seen the label yet (%v)", err)
		}
		if hub.Recomputes() == before {
			return fmt.Errorf("not recomputed since the label change")
		}
		return nil
	})
	hub.Bump(web, 0) // no-op: the revision is already above 0
	if got := current(); got.Policy.Revision != second.Policy.Revision {
		t.Errorf("revision moved %d -> %d without a content change", second.Policy.Revision, got.Policy.Revision)
	}

	// Bump gives the content a revision above one another replica issued.
	hub.Bump(web, second.Policy.Revision+100)
	if got := current(); got.Policy.Revision != second.Policy.Revision+101 || got.Hash != second.Hash {
		t.Errorf("after bump: revision %d hash %s, want %d and the same hash", got.Policy.Revision, got.Hash, second.Policy.Revision+101)
	}

	// A workload without a policy.
	if _, release, err := hub.Acquire(ctx, workload.Key{Namespace: "shop", Kind: "Deployment", Name: "api"}); err != ErrNoPolicy {
		t.Errorf("acquire without policy: %v, want ErrNoPolicy", err)
	} else {
		release()
	}
}

// A namespace user's pod that names another workload's ReplicaSet as its controller, with a UID that
// is not the ReplicaSet's, does not count as that workload's: its address is in no rule that names the
// workload or the ReplicaSet, and its events dirty only itself.
func TestSpoofedControllerIsNoWorkloadPeer(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	var hub *Hub
	pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		if err := Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub = NewHub(mgr.GetCache(), HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		return mgr.Add(hub)
	})
	pgtest.Namespace(t, c, "shop", nil)
	api := k.Deployment("shop", "api", "", "10.1.0.1")
	k.Deployment("shop", "db", "", "10.1.0.5")
	rsName := api[0].OwnerReferences[0].Name
	k.Create(&v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-db"},
		Spec: v1.WorkloadPolicySpec{
			Workload: v1.WorkloadRef{Kind: "Deployment", Name: "db"}, Mode: policy.Protect,
			Ingress: []v1.Rule{
				{Name: "api", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}}},
				{Name: "api-rs", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "ReplicaSet", Name: rsName}}}}},
			},
		},
	})
	db := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "db"}
	// mallory may create pods in shop and nothing else.
	k.Create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pods"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}}})
	k.Create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "mallory"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pods"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "mallory"}}})
	malloryCfg := rest.CopyConfig(cfg)
	malloryCfg.Impersonate = rest.ImpersonationConfig{UserName: "mallory"}
	mallory, err := client.New(malloryCfg, client.Options{Scheme: pgtest.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	spoof := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "spoof", Labels: api[0].Labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rsName, UID: "not-the-rs", Controller: &yes}}},
		Spec: api[0].Spec}
	if err := mallory.Create(ctx, spoof); err != nil {
		t.Fatalf("mallory creates her pod: %v", err)
	}
	k.SetIP(spoof, "10.1.0.66") // the kubelet's doing, not mallory's
	if got, want := hub.ownersOf(spoof), []workload.Key{{Namespace: "shop", Kind: "Pod", Name: "spoof"}}; !cmp.Equal(got, want) {
		t.Errorf("ownersOf(spoof) = %v, want %v", got, want)
	}

	// A genuine pod of api started after mallory's: once the hub shows it, it has seen hers too.
	genuine := k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: rsName + "-9",
		Labels: api[0].Labels, OwnerReferences: api[0].OwnerReferences}, Spec: api[0].Spec}).(*corev1.Pod)
	k.SetIP(genuine, "10.1.0.2")
	want := pfx("10.1.0.1/32", "10.1.0.2/32")
	var snap Snapshot
	testutil.Eventually(t, 10*time.Second, func() error {
		var release func()
		snap, release, err = hub.Acquire(ctx, db)
		release()
		if err != nil {
			return err
		}
		for _, r := range snap.Policy.Ingress {
			if !cmp.Equal(r.CIDRs, want, cmpopts.EquateComparable(netip.Prefix{})) {
				return fmt.Errorf("rule %s has %v, want %v", r.ID, r.CIDRs, want)
			}
		}
		return nil
	})
	if name, ok := snap.Policy.Names[netip.MustParseAddr("10.1.0.66")]; ok {
		t.Errorf("mallory's address is named %q", name)
	}
}
