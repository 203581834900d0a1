package ui

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
)

func testSpec() *v1.WorkloadPolicySpec {
	return &v1.WorkloadPolicySpec{
		Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"},
		Ingress: []v1.Rule{
			{Name: "probes", Origin: policy.OriginManifest, Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
			{Name: "from-lb", Origin: policy.OriginUser, Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}}},
		},
		Egress: []v1.Rule{
			{Name: "dns", Origin: policy.OriginManifest, Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "kube-system", Name: "kube-dns"}}},
				Ports: []v1.Port{{Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 53}}},
			{Name: "learned-api", Origin: policy.OriginLearned, Peers: []v1.Peer{
				{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}},
				{Selector: &v1.SelectorPeer{PodSelector: &v1.LabelSelector{MatchLabels: map[string]v1.LabelValue{"app": "cache"}}}},
			}, Ports: []v1.Port{{Port: 9000, EndPort: 9010}, {Protocol: "UDP"}}},
			{Name: "stripe", Origin: policy.OriginUser, Peers: []v1.Peer{{FQDN: "api.stripe.com"}, {FQDN: "*.s3.amazonaws.com"}},
				Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
		},
		Loopback: []v1.LoopbackRule{{Name: "proxy-admin", Origin: policy.OriginManifest, Action: "deny", Ports: []v1.Port{{Protocol: "TCP", Port: 15000}}}},
	}
}

func TestDescribe(t *testing.T) {
	want := []RuleGroup{
		{Origin: policy.OriginManifest, Rules: []string{
			"Allow connections from the cluster's nodes on TCP 8080 (probes).",
			"Allow connections to Service kube-dns in namespace kube-system on UDP 53, TCP 53 (dns).",
			"Forbid the pod's own processes to reach its local TCP 15000 (proxy-admin).",
		}},
		{Origin: policy.OriginLearned, Rules: []string{
			"Allow connections to Deployment api or pods labelled app=cache of this namespace on TCP 9000-9010, every UDP port (learned-api).",
		}},
		{Origin: policy.OriginUser, Rules: []string{
			"Allow connections from addresses 10.0.0.0/8 on every port (from-lb).",
			"Allow connections to the name api.stripe.com or any name one label under s3.amazonaws.com on TCP 443 (stripe).",
		}},
	}
	if diff := cmp.Diff(want, Describe(testSpec())); diff != "" {
		t.Errorf("Describe (-want +got):\n%s", diff)
	}
	pinned := v1.Rule{Name: "m-svc-db", Origin: policy.OriginManifest, Peers: []v1.Peer{{Service: &v1.ServicePeer{Name: "db",
		Endpoints: &v1.ServiceEndpoints{Addresses: []v1.IPAddress{"192.0.2.1", "192.0.2.2"}}}}}, Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}}
	if got, want := RuleInWords("egress", pinned), "Allow connections to Service db (while its EndpointSlices point at 192.0.2.1, 192.0.2.2 only) on TCP 5432 (m-svc-db)."; got != want {
		t.Errorf("pinned Service in words: %q, want %q", got, want)
	}
	empty := Describe(&v1.WorkloadPolicySpec{})
	if diff := cmp.Diff([]RuleGroup{{Origin: policy.OriginManifest, Rules: []string{}}, {Origin: policy.OriginLearned, Rules: []string{}},
		{Origin: policy.OriginUser, Rules: []string{}}}, empty); diff != "" {
		t.Errorf("Describe of no rules (-want +got):\n%s", diff)
	}
}

func TestDNSInWords(t *testing.T) {
	spec := testSpec()
	if got := DNSInWords(spec); got != "DNS: the pod may look up any name." {
		t.Errorf("without restrictDNS: %q", got)
	}
	spec.RestrictDNS = true
	if got := DNSInWords(spec); !strings.HasPrefix(got, "DNS: the pod may look up only names its egress rules name") {
		t.Errorf("with restrictDNS: %q", got)
	}
}

func TestCountByOrigin(t *testing.T) {
	want := map[policy.Origin]int{policy.OriginManifest: 3, policy.OriginLearned: 1, policy.OriginUser: 2}
	if diff := cmp.Diff(want, CountByOrigin(testSpec())); diff != "" {
		t.Errorf("CountByOrigin (-want +got):\n%s", diff)
	}
}

func TestBuildGraph(t *testing.T) {
	web := v1.WorkloadPolicy{Spec: *testSpec()}
	web.Namespace, web.Spec.Mode = "shop", policy.Protect
	api := v1.WorkloadPolicy{Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}
	api.Namespace = "shop"
	vs := []Event{
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "shop/Deployment/db", Protocol: "TCP", Port: 5432},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "ingress", Peer: "192.0.2.7", Protocol: "TCP", Port: 80},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "loopback", Peer: "127.0.0.1", Protocol: "TCP", Port: 15000},
		// The nodes a rule allows and the nodes a verdict names are one graph node.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "ingress", Peer: "nodes", Protocol: "TCP", Port: 9090},
		// A name the pod resolved an outside address from names the node, as a rule's name does.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "203.0.113.7", PeerAddr: "203.0.113.7", Name: "api.stripe.com", Protocol: "TCP", Port: 80},
		// A refused DNS query goes to the resolver, whatever name it asked for.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "192.0.2.53", PeerAddr: "192.0.2.53", Name: "x.example.org",
			Protocol: "UDP", Port: 53, Evaluator: policyapi.QueryEvaluator},
	}
	got := BuildGraph([]v1.WorkloadPolicy{web, api}, vs)
	want := Graph{
		Nodes: []Node{
			{ID: "*.s3.amazonaws.com"}, {ID: "10.0.0.0/8"}, {ID: "192.0.2.53"}, {ID: "192.0.2.7"}, {ID: "api.stripe.com"},
			{ID: "kube-system/Service/kube-dns"},
			{ID: "nodes"},
			{ID: "pods labelled app=cache of this namespace"},
			{ID: "shop/Deployment/api", Workload: true, Mode: policy.Learn},
			{ID: "shop/Deployment/db"},
			{ID: "shop/Deployment/web", Workload: true, Mode: policy.Protect},
		},
		Edges: []Edge{
			{From: "10.0.0.0/8", To: "shop/Deployment/web", Kind: "allowed", Label: "every port"},
			{From: "192.0.2.7", To: "shop/Deployment/api", Kind: "denied", Label: "TCP 80"},
			{From: "nodes", To: "shop/Deployment/web", Kind: "allowed", Label: "TCP 8080"},
			{From: "nodes", To: "shop/Deployment/web", Kind: "denied", Label: "TCP 9090"},
			{From: "shop/Deployment/web", To: "*.s3.amazonaws.com", Kind: "allowed", Label: "TCP 443"},
			{From: "shop/Deployment/web", To: "192.0.2.53", Kind: "denied", Label: "UDP 53"},
			{From: "shop/Deployment/web", To: "api.stripe.com", Kind: "allowed", Label: "TCP 443"},
			{From: "shop/Deployment/web", To: "api.stripe.com", Kind: "denied", Label: "TCP 80"},
			{From: "shop/Deployment/web", To: "kube-system/Service/kube-dns", Kind: "allowed", Label: "UDP 53, TCP 53"},
			{From: "shop/Deployment/web", To: "pods labelled app=cache of this namespace", Kind: "allowed", Label: "TCP 9000-9010, every UDP port"},
			{From: "shop/Deployment/web", To: "shop/Deployment/api", Kind: "allowed", Label: "TCP 9000-9010, every UDP port"},
			{From: "shop/Deployment/web", To: "shop/Deployment/db", Kind: "denied", Label: "TCP 5432"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BuildGraph (-want +got):\n%s", diff)
	}
}
