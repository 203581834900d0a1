package ui

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
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
