package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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

// startHubCluster runs a hub, with policygen's cache, against a fresh API server.
func startHubCluster(t *testing.T) (pgtest.Cluster, manager.Manager, *Hub) {
	cfg, c := pgtest.Start(t)
	hub, mgr := startHub(t, cfg, cache.Options{})
	return pgtest.Cluster{T: t, C: c, Cfg: cfg}, mgr, hub
}

func TestHubResolvesAndRevises(t *testing.T) {
	k, mgr, hub := startHubCluster(t)
	c, ctx := k.C, context.Background()
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
			Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Protect, RestrictDNS: true,
			Ingress: []v1.Rule{
				{Name: "probes", Origin: "manifest", Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
				{Name: "metrics", Peers: []v1.Peer{{Selector: &v1.SelectorPeer{NamespaceSelector: &v1.LabelSelector{MatchLabels: map[string]v1.LabelValue{"team": "ops"}}}}}},
			},
			Egress: []v1.Rule{
				{Name: "api", Origin: "learned", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 8000}}},
				{Name: "api-svc", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "api"}}, {CIDR: "172.16.0.0/12"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 80}}},
				// Names are no addresses: the sidecar learns theirs from DNS answers.
				{Name: "stripe", Peers: []v1.Peer{{FQDN: "api.stripe.com"}, {FQDN: "*.stripe.com"}, {FQDN: "api.stripe.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				{Name: "mixed", Peers: []v1.Peer{{FQDN: "example.com"}, {CIDR: "198.51.100.0/24"}}},
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
			Namespace: "shop", Workload: "Deployment/web", Mode: policy.Protect, RestrictDNS: true,
			Ingress: []policy.Rule{
				{ID: "ingress/probes", Origin: "manifest", Peer: "nodes", CIDRs: pfx("192.168.1.10/32"), Ports: []policy.PortRange{{Protocol: "TCP", Port: 8080}}},
				{ID: "ingress/metrics", Origin: "user", Peer: "selector:namespace(team=ops)", CIDRs: pfx("10.2.0.1/32")},
			},
			Egress: []policy.Rule{
				{ID: "egress/api", Origin: "learned", Peer: "workload:shop/Deployment/api", CIDRs: pfx(apiCIDRs...), Ports: []policy.PortRange{{Protocol: "TCP", Port: 8000}}},
				{ID: "egress/api-svc", Origin: "user", Peer: "service:shop/api,cidr:172.16.0.0/12",
					CIDRs: pfx(append(append([]string{clusterIP}, apiCIDRs...), "172.16.0.0/12")...), Ports: []policy.PortRange{{Protocol: "TCP", Port: 80}}},
				{ID: "egress/stripe", Origin: "user", Peer: "fqdn:api.stripe.com,fqdn:*.stripe.com,fqdn:api.stripe.com", CIDRs: pfx(),
					Names: []string{"*.stripe.com", "api.stripe.com"}, Ports: []policy.PortRange{{Protocol: "TCP", Port: 443}}},
				{ID: "egress/mixed", Origin: "user", Peer: "fqdn:example.com,cidr:198.51.100.0/24", CIDRs: pfx("198.51.100.0/24"), Names: []string{"example.com"}},
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

// A Service without a selector forwards wherever its EndpointSlices point: its peer resolves to
// their addresses as well as its cluster IP, and a peer pinned to endpoint addresses loses the
// cluster IP as soon as a slice (here one a namespace user wrote) lists an address outside the pin.
func TestSelectorlessServiceResolvesThroughEndpointSlices(t *testing.T) {
	k, _, hub := startHubCluster(t)
	c, ctx := k.C, context.Background()
	pgtest.Namespace(t, c, "shop", nil)
	k.Deployment("shop", "web", "", "10.1.0.9")
	svc := k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}}).(*corev1.Service)
	k.Create(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "db"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.10"}}}})
	pinned := v1.ServicePeer{Name: "db", Endpoints: &v1.ServiceEndpoints{Addresses: []v1.IPAddress{"192.0.2.10"}}}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Protect,
			Egress: []v1.Rule{
				{Name: "db", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "db"}}}},
				{Name: "db-pinned", Origin: "manifest", Peers: []v1.Peer{{Service: &pinned}}},
			}}})
	web := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}
	clusterIP := svc.Spec.ClusterIP + "/32"
	expect := func(db, dbPinned []netip.Prefix) {
		t.Helper()
		for _, l := range [][]netip.Prefix{db, dbPinned} {
			slices.SortFunc(l, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			snap, release, err := hub.Acquire(ctx, web)
			if err != nil {
				return err
			}
			release()
			got := map[string][]netip.Prefix{}
			for _, r := range snap.Policy.Egress {
				got[r.ID] = r.CIDRs
			}
			want := map[string][]netip.Prefix{"egress/db": db, "egress/db-pinned": dbPinned}
			if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{})); d != "" {
				return fmt.Errorf("egress addresses (-want +got):\n%s", d)
			}
			if n := snap.Policy.Names[netip.MustParseAddr("192.0.2.10")]; n != "service:shop/db" {
				return fmt.Errorf("endpoint named %q, want the Service", n)
			}
			return nil
		})
	}
	expect(pfx("192.0.2.10/32", clusterIP), pfx("192.0.2.10/32", clusterIP))

	// A namespace user's slice points the Service at an address in another namespace's range.
	nsUser := k.NamespaceUser("shop", "alice", rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"create"}})
	if err := nsUser.Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-2",
		Labels: map[string]string{discoveryv1.LabelServiceName: "db"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.99.0.5"}}}}); err != nil {
		t.Fatal(err)
	}
	// The unpinned peer follows the slices; the pinned one keeps its address and drops the cluster IP.
	expect(pfx("10.99.0.5/32", "192.0.2.10/32", clusterIP), pfx("192.0.2.10/32"))
}

// startHub runs a hub in a manager whose cache has opts, as policygen does.
func startHub(t *testing.T, cfg *rest.Config, opts cache.Options) (*Hub, manager.Manager) {
	ctx := context.Background()
	var hub *Hub
	mgr := pgtest.ManagerWithCache(t, cfg, opts, func(mgr manager.Manager) error {
		if err := Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub = NewHub(mgr.GetCache(), HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		return mgr.Add(hub)
	})
	return hub, mgr
}

// ingressOf waits until each ingress rule of k's resolved policy holds what want has under its name
// (nothing when want lacks it), and returns the snapshot.
func ingressOf(t *testing.T, hub *Hub, k workload.Key, want map[string][]netip.Prefix) Snapshot {
	t.Helper()
	var snap Snapshot
	testutil.Eventually(t, 10*time.Second, func() error {
		s, release, err := hub.Acquire(context.Background(), k)
		release()
		if err != nil {
			return err
		}
		snap = s
		for _, r := range snap.Policy.Ingress {
			if w := want[strings.TrimPrefix(r.ID, "ingress/")]; !cmp.Equal(r.CIDRs, w, cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()) {
				return fmt.Errorf("rule %s has %v, want %v", r.ID, r.CIDRs, w)
			}
		}
		return nil
	})
	return snap
}

// A namespace user's pods that name another workload's ReplicaSet as their controller, with a UID that
// is not the ReplicaSet's, not marked controller, or with labels its selector does not match, do not
// count as that workload's: their addresses are in no rule that names the workload or the ReplicaSet.
func TestSpoofedControllerIsNoWorkloadPeer(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	hub, _ := startHub(t, cfg, cache.Options{})
	pgtest.Namespace(t, c, "shop", nil)
	api := k.Deployment("shop", "api", "", "10.1.0.1")
	k.Deployment("shop", "db", "", "10.1.0.5")
	rs := api[0].OwnerReferences[0]
	k.Create(&v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-db"},
		Spec: v1.WorkloadPolicySpec{
			Workload: v1.WorkloadRef{Kind: "Deployment", Name: "db"}, Mode: policy.Protect,
			Ingress: []v1.Rule{
				{Name: "api", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}}},
				{Name: "api-rs", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "ReplicaSet", Name: rs.Name}}}}},
			},
		},
	})
	db := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "db"}
	mallory := k.PodCreator("shop", "mallory")
	no := false
	wrongUID, notController := rs, rs
	wrongUID.UID = "not-the-rs"
	notController.Controller = &no
	spoofs := []struct {
		name   string
		labels map[string]string
		ref    metav1.OwnerReference
		ip     string
	}{
		{"spoof-uid", api[0].Labels, wrongUID, "10.1.0.66"},
		{"spoof-controller", api[0].Labels, notController, "10.1.0.67"},
		// She read the ReplicaSet's UID off a pod of it; her labels are not the selector's.
		{"spoof-labels", map[string]string{"app": "mallory"}, rs, "10.1.0.68"},
	}
	for _, sp := range spoofs {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sp.name, Labels: sp.labels,
			OwnerReferences: []metav1.OwnerReference{sp.ref}}, Spec: api[0].Spec}
		if err := mallory.Create(ctx, p); err != nil {
			t.Fatalf("mallory creates %s: %v", sp.name, err)
		}
		k.SetIP(p, sp.ip) // the kubelet's doing, not mallory's
	}

	// A genuine pod of api started after mallory's: once the hub shows it, it has seen hers too.
	genuine := k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: rs.Name + "-9",
		Labels: api[0].Labels, OwnerReferences: api[0].OwnerReferences}, Spec: api[0].Spec}).(*corev1.Pod)
	k.SetIP(genuine, "10.1.0.2")
	want := pfx("10.1.0.1/32", "10.1.0.2/32")
	snap := ingressOf(t, hub, db, map[string][]netip.Prefix{"api": want, "api-rs": want})
	for _, sp := range spoofs {
		if name, ok := snap.Policy.Names[netip.MustParseAddr(sp.ip)]; ok {
			t.Errorf("%s's address is named %q", sp.name, name)
		}
	}
}

// A Deployment's pod counts as the Deployment's once the cache holds its ReplicaSet and the Deployment,
// which here arrive after the pod, the Deployment last: the hub re-verifies on the owners' own events.
// The cache sees a ReplicaSet or Deployment only once it is labelled cached=yes, so that the test, not
// the informers' timing, decides the order.
func TestPodCountsOnceItsOwnersAreCached(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	gate := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{"cached": "yes"})}
	hub, mgr := startHub(t, cfg, cache.Options{ByObject: map[client.Object]cache.ByObject{&appsv1.ReplicaSet{}: gate, &appsv1.Deployment{}: gate}})
	pgtest.Namespace(t, c, "shop", nil)
	api := k.Deployment("shop", "api", "", "10.1.0.1")[0]
	// solo, a ReplicaSet of its own, marks when the hub has handled the ReplicaSet events before its own.
	solo := k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "solo"},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "solo"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "solo"}}, Spec: api.Spec}}})
	yes := true
	soloPod := k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "solo-1", Labels: map[string]string{"app": "solo"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "solo", UID: solo.GetUID(), Controller: &yes}}},
		Spec: api.Spec}).(*corev1.Pod)
	k.SetIP(soloPod, "10.1.0.99")
	peer := func(kind, name string) []v1.Peer {
		return []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: kind, Name: name}}}}
	}
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-db"},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "db"}, Mode: policy.Protect,
			Ingress: []v1.Rule{{Name: "api", Peers: peer("Deployment", "api")}, {Name: "solo", Peers: peer("ReplicaSet", "solo")}}}})
	db := workload.Key{Namespace: "shop", Kind: "Deployment", Name: "db"}
	admit := func(obj client.Object) { // into the cache
		t.Helper()
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		l := obj.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l["cached"] = "yes"
		obj.SetLabels(l)
		if err := c.Update(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, p := range []*corev1.Pod{api, soloPod} {
			var got corev1.Pod
			if err := mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil || len(got.Status.PodIPs) == 0 {
				return fmt.Errorf("pod %s not in the cache with its address: %v", p.Name, err)
			}
		}
		return nil
	})
	ingressOf(t, hub, db, nil)

	// The ReplicaSet arrives, then solo's: once solo's pod shows, the hub has resolved with api's
	// ReplicaSet in the cache, and found no Deployment above it: api's pod does not count yet.
	admit(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: api.OwnerReferences[0].Name}})
	admit(solo)
	ingressOf(t, hub, db, map[string][]netip.Prefix{"solo": pfx("10.1.0.99/32")})

	// The Deployment arrives, and nothing else changes: its own event brings the policy up to date.
	admit(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"}})
	snap := ingressOf(t, hub, db, map[string][]netip.Prefix{"api": pfx("10.1.0.1/32"), "solo": pfx("10.1.0.99/32")})
	if got, want := snap.Policy.Names[netip.MustParseAddr("10.1.0.1")], "workload:shop/Deployment/api"; got != want {
		t.Errorf("the pod is named %q, want %q", got, want)
	}
}

// A selector peer that names one namespace by its kubernetes.io/metadata.name label (a learned
// namespace peer) resolves to that namespace's pods and depends on them alone: a pod of another
// namespace or a namespace's labels do not recompute it. Any other namespace selector depends on
// every namespace.
func TestNamespaceByNameDependsOnItAlone(t *testing.T) {
	cfg, c := pgtest.Start(t)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	for _, ns := range []string{"shop", "data", "other"} {
		pgtest.Namespace(t, c, ns, map[string]string{"team": "a"})
	}
	k.Deployment("data", "db", "", "10.2.0.1")
	k.Deployment("other", "x", "", "10.3.0.1")
	peer := func(sel map[string]v1.LabelValue) *v1.WorkloadPolicy {
		return &v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
			Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Protect,
				Egress: []v1.Rule{{Name: "ns", Peers: []v1.Peer{{Selector: &v1.SelectorPeer{NamespaceSelector: &v1.LabelSelector{MatchLabels: sel}}}}}}}}
	}
	var dataPod, otherPod corev1.PodList
	if err := c.List(context.Background(), &dataPod, client.InNamespace("data")); err != nil {
		t.Fatal(err)
	}
	if err := c.List(context.Background(), &otherPod, client.InNamespace("other")); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}

	p, d, err := resolvePolicy(context.Background(), c, peer(map[string]v1.LabelValue{corev1.LabelMetadataName: "data"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Egress[0].CIDRs; !slices.Equal(got, pfx("10.2.0.1/32")) {
		t.Errorf("by name: egress to %v, want data's pod alone", got)
	}
	if !affects(&dataPod.Items[0], nil, &d) || affects(&otherPod.Items[0], nil, &d) || affects(ns, nil, &d) {
		t.Errorf("by name: depends on %+v; want data's pods alone", d)
	}

	p, d, err = resolvePolicy(context.Background(), c, peer(map[string]v1.LabelValue{"team": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Egress[0].CIDRs; !slices.Equal(got, pfx("10.2.0.1/32", "10.3.0.1/32")) {
		t.Errorf("by label: egress to %v, want both namespaces' pods", got)
	}
	if !affects(&otherPod.Items[0], nil, &d) || !affects(ns, nil, &d) {
		t.Errorf("by label: depends on %+v; want every namespace", d)
	}
}
