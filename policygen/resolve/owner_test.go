package resolve

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/workload"
)

func TestOwnerOf(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "shop", nil)
	k.Deployment("shop", "api", "", "10.1.0.1")
	k.Deployment("shop", "web", "", "10.1.0.2")
	// pod creates a bare pod in phase holding ip.
	pod := func(name, ip string, phase corev1.PodPhase, hostNetwork bool) {
		t.Helper()
		p := k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: corev1.PodSpec{HostNetwork: hostNetwork, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}).(*corev1.Pod)
		p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = phase, ip, []corev1.PodIP{{IP: ip}}
		if err := c.Status().Update(ctx, p); err != nil {
			t.Fatalf("status of pod %s: %v", name, err)
		}
	}
	pod("solo", "10.1.0.8", corev1.PodRunning, false)
	pod("done", "10.1.0.2", corev1.PodSucceeded, false) // web's pod got its IP since
	pod("crashed", "10.1.0.3", corev1.PodFailed, false)
	pod("agent", "192.168.1.10", corev1.PodRunning, true)
	svc := k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}}}).(*corev1.Service)
	node := k.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}).(*corev1.Node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.10"}}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	// Everything exists before the cache starts, so that its first list holds it all.
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error { return Index(ctx, mgr.GetFieldIndexer()) })

	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	tests := []struct {
		name string
		addr string
		want Owner
		str  string
	}{
		{"a running pod's workload", "10.1.0.1",
			Owner{Kind: OwnerWorkload, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "api"}}, "shop/Deployment/api"},
		{"a bare pod is its own workload", "10.1.0.8",
			Owner{Kind: OwnerWorkload, Workload: workload.Key{Namespace: "shop", Kind: "Pod", Name: "solo"}}, "shop/Pod/solo"},
		{"a finished pod yields its IP to the live pod holding it", "10.1.0.2",
			Owner{Kind: OwnerWorkload, Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: "web"}}, "shop/Deployment/web"},
		{"a finished pod owns nothing", "10.1.0.3", Owner{Kind: OwnerExternal}, "10.1.0.3"},
		{"a Service's cluster IP", clusterIP.String(),
			Owner{Kind: OwnerService, Service: types.NamespacedName{Namespace: "shop", Name: "api"}}, "shop/Service/api"},
		{"a host-network pod's address is its node's", "192.168.1.10", Owner{Kind: OwnerNodes}, "nodes"},
		{"any of a node's addresses", "203.0.113.10", Owner{Kind: OwnerNodes}, "nodes"},
		{"an address outside the cluster", "198.51.100.4", Owner{Kind: OwnerExternal}, "198.51.100.4"},
		{"an IPv6 address outside the cluster", "2001:db8::1", Owner{Kind: OwnerExternal}, "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := netip.MustParseAddr(tt.addr)
			got, err := OwnerOf(ctx, mgr.GetCache(), nil, addr)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Addr = addr
			if d := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("OwnerOf(%s) (-want +got):\n%s", addr, d)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("OwnerOf(%s).String() = %q, want %q", addr, s, tt.str)
			}
		})
	}
}
