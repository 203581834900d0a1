package export

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/internal/pgtest"
)

func TestWriteExportsAValidNetworkPolicy(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "shop", nil)
	pgtest.Namespace(t, c, "data", nil)
	k.Deployment("shop", "web", "")
	k.Deployment("data", "db", "")
	k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}}})
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Monitor, RestrictDNS: true,
			Ingress: []v1.Rule{
				{Name: "m-probes", Origin: "manifest", Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
				{Name: "m-svc-web", Origin: "manifest", Peers: []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
				// A NetworkPolicy names no ICMP: the port is dropped, and a rule left with no port is left
				// out rather than exported without ports, which would allow every protocol.
				{Name: "ping", Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}}, Ports: []v1.Port{{Protocol: "ICMP", Types: []int32{8}}}},
				{Name: "metrics", Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 9090}, {Protocol: "ICMPv6"}}},
			},
			Egress: []v1.Rule{
				{Name: "db", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{Namespace: "data", WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "db"}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
				{Name: "api", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "api"}}, {Service: &v1.ServicePeer{Name: "gone"}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 8000, EndPort: 8010}}},
				{Name: "monitoring", Peers: []v1.Peer{{Selector: &v1.SelectorPeer{NamespaceSelector: &v1.LabelSelector{MatchLabels: map[string]v1.LabelValue{"team": "ops"}}}}}},
				// Names are left out, never widened to the addresses they have now.
				{Name: "stripe", Peers: []v1.Peer{{FQDN: "api.stripe.com"}, {FQDN: "*.stripe.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				{Name: "mixed", Peers: []v1.Peer{{FQDN: "example.com"}, {CIDR: "198.51.100.0/24"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				// A Service without a selector is its pinned endpoint addresses; a pin of none allows nothing.
				{Name: "m-svc-ledger", Origin: "manifest", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "ledger",
					Endpoints: &v1.ServiceEndpoints{Addresses: []v1.IPAddress{"192.0.2.10", "2001:db8::10"}}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
				{Name: "m-svc-empty", Origin: "manifest", Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "empty", Endpoints: &v1.ServiceEndpoints{}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
			},
			Loopback: []v1.LoopbackRule{{Name: "admin", Action: "deny", Ports: []v1.Port{{Port: 15000}}}},
		}})

	var out bytes.Buffer
	if err := Write(ctx, c, "shop", "deployment-web", &out); err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(out.Bytes(), &np); err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, out.String())
	}
	tcp := corev1.ProtocolTCP
	port := func(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }
	end := int32(8010)
	want := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		PolicyTypes: []networkingv1.PolicyType{"Ingress", "Egress"},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			// Everyone: network plugins differ on whether an ipBlock matches pods, so they are selected too.
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}, {IPBlock: &networkingv1.IPBlock{CIDR: "::/0"}},
				{NamespaceSelector: &metav1.LabelSelector{}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8080)}},
		}, {
			From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(9090)}},
		}},
		Egress: []networkingv1.NetworkPolicyEgressRule{
			{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "data"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(5432)}}},
			{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(80)}, {Protocol: &tcp, Port: port(8000), EndPort: &end}}},
			{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "ops"}}}}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.51.100.0/24"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(443)}}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.10/32"}}, {IPBlock: &networkingv1.IPBlock{CIDR: "2001:db8::10/128"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(5432)}}},
		},
	}
	if d := cmp.Diff(want, np.Spec); d != "" {
		t.Errorf("spec (-want +got):\n%s", d)
	}
	for _, note := range []string{"mode Monitor", "ingress rule m-probes: nodes", "ingress rule m-probes left out", "egress rule api: Service shop/gone", "loopback rule admin",
		"ingress rule ping: ICMP (types [8]) cannot be named in a NetworkPolicy", "ingress rule ping left out: none of its ports",
		"ingress rule metrics: ICMPv6 cannot be named in a NetworkPolicy",
		"restrictDNS: a NetworkPolicy cannot judge DNS queries", "egress rule stripe: fqdn api.stripe.com: a NetworkPolicy cannot name DNS names",
		"egress rule stripe: fqdn *.stripe.com: a NetworkPolicy cannot name DNS names", "egress rule stripe left out",
		"egress rule mixed: fqdn example.com: a NetworkPolicy cannot name DNS names, so the exported policy denies what this peer allows",
		"egress rule m-svc-empty: Service empty pins no endpoint address, so the exported policy allows nothing for it", "egress rule m-svc-empty left out"} {
		if !strings.Contains(out.String(), "# not expressed: "+note) {
			t.Errorf("output does not note %q:\n%s", note, out.String())
		}
	}
	// The API server takes it.
	if err := c.Create(ctx, &np); err != nil {
		t.Fatalf("API server refuses the exported NetworkPolicy: %v", err)
	}
}
