package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testenv"
)

func valid() *v1.WorkloadPolicy {
	return &v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deployment-web", Namespace: "default"},
		Spec: v1.WorkloadPolicySpec{
			Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"},
			Ingress: []v1.Rule{{
				Name:  "from-api",
				Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}},
				Ports: []v1.Port{{Protocol: "TCP", Port: 8080}, {Protocol: "ICMP", Types: []int32{8}}, {Protocol: "ICMPv6"}},
			}},
			Egress: []v1.Rule{{
				Name: "internet",
				Peers: []v1.Peer{
					{CIDR: "10.0.0.0/8"}, {CIDR: "2001:db8::/32"},
					{Service: &v1.ServicePeer{Namespace: "kube-system", Name: "kube-dns"}},
					{Service: &v1.ServicePeer{Name: "external", Endpoints: &v1.ServiceEndpoints{Addresses: []v1.IPAddress{"203.0.113.7", "2001:db8::7"}}}},
					{Selector: &v1.SelectorPeer{PodSelector: &v1.LabelSelector{
						MatchLabels:      map[string]v1.LabelValue{"app.kubernetes.io/name": "db"},
						MatchExpressions: []v1.LabelRequirement{{Key: "tier", Operator: "In", Values: []string{"a", "b"}}},
					}}},
					{FQDN: "api.stripe.com"}, {FQDN: "*.s3.amazonaws.com"},
				},
				Ports: []v1.Port{{Port: 1000, EndPort: 2000}, {Protocol: "UDP"}},
			}},
			Loopback: []v1.LoopbackRule{{Name: "admin", Action: "deny", Ports: []v1.Port{{Port: 15000}}}},
		},
	}
}

func TestAPIServerValidation(t *testing.T) {
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{testenv.CRDDir()}})
	s := clientgoscheme.Scheme
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("valid policy is stored with defaults", func(t *testing.T) {
		p := valid()
		if err := c.Create(ctx, p); err != nil {
			t.Fatalf("create: %v", err)
		}
		if p.Spec.Mode != policy.Learn || p.Spec.Ingress[0].Origin != policy.OriginUser || p.Spec.Egress[0].Ports[0].Protocol != "TCP" {
			t.Errorf("defaults not applied: mode %q origin %q protocol %q", p.Spec.Mode, p.Spec.Ingress[0].Origin, p.Spec.Egress[0].Ports[0].Protocol)
		}
	})

	bad := []struct {
		name   string
		mutate func(p *v1.WorkloadPolicy)
		want   string
	}{
		{"cidr with host bits", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[0].CIDR = "10.1.2.3/8" }, "without host bits"},
		{"not a cidr", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[0].CIDR = "10.0.0.300/32" }, "without host bits"},
		{"port above 65535", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[0].Port = 70000 }, "65535"},
		{"negative port", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[0].Port = -1 }, "greater than or equal to 1"},
		{"end port below port", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Ports[0].EndPort = 999 }, "endPort"},
		{"end port without port", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Ports[1].EndPort = 10 }, "endPort"},
		{"unknown protocol", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[0].Protocol = "GRE" }, "Unsupported value"},
		{"icmp with a port", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[0].Protocol = "ICMP" }, "have no ports"},
		{"icmp type above 255", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[1].Types = []int32{256} }, "255"},
		{"negative icmp type", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[1].Types = []int32{-1} }, "greater than or equal to 0"},
		{"types for tcp", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Ports[0].Types = []int32{8} }, "types are for ICMP"},
		{"types without protocol", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Ports[0].Types = []int32{8} }, "types are for ICMP"},
		{"icmp in a loopback rule", func(p *v1.WorkloadPolicy) { p.Spec.Loopback[0].Ports = []v1.Port{{Protocol: "ICMP"}} }, "loopback rules name ports"},
		{"two peer kinds", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[0].Nodes = true }, "exactly one"},
		{"empty peer", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[0] = v1.Peer{} }, "exactly one"},
		{"bad label key", func(p *v1.WorkloadPolicy) {
			p.Spec.Egress[0].Peers[4].Selector.PodSelector.MatchLabels = map[string]v1.LabelValue{"bad key!": "x"}
		}, "label keys"},
		{"bad label value", func(p *v1.WorkloadPolicy) {
			p.Spec.Egress[0].Peers[4].Selector.PodSelector.MatchLabels = map[string]v1.LabelValue{"app": "-x-"}
		}, "should match"},
		{"In without values", func(p *v1.WorkloadPolicy) {
			p.Spec.Egress[0].Peers[4].Selector.PodSelector.MatchExpressions[0].Values = nil
		}, "need values"},
		{"bad operator", func(p *v1.WorkloadPolicy) {
			p.Spec.Egress[0].Peers[4].Selector.PodSelector.MatchExpressions[0].Operator = "Gt"
		}, "Unsupported value"},
		{"selector with neither", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[4].Selector = &v1.SelectorPeer{} }, "podSelector"},
		{"duplicate rule names", func(p *v1.WorkloadPolicy) { p.Spec.Egress = append(p.Spec.Egress, p.Spec.Egress[0]) }, "Duplicate value"},
		{"rule without peers", func(p *v1.WorkloadPolicy) { p.Spec.Ingress[0].Peers = nil }, "peers"},
		{"endpoint not an address", func(p *v1.WorkloadPolicy) {
			p.Spec.Egress[0].Peers[3].Service.Endpoints.Addresses = []v1.IPAddress{"10.0.0.0/8"}
		}, "must be an IP address"},
		{"bad mode", func(p *v1.WorkloadPolicy) { p.Spec.Mode = "Enforce" }, "Unsupported value"},
		{"bad loopback action", func(p *v1.WorkloadPolicy) { p.Spec.Loopback[0].Action = "drop" }, "Unsupported value"},
		{"bad workload kind", func(p *v1.WorkloadPolicy) { p.Spec.Workload.Kind = "Service" }, "Unsupported value"},
		{"fqdn and cidr in one peer", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[0].FQDN = "example.com" }, "exactly one"},
		{"fqdn in an ingress rule", func(p *v1.WorkloadPolicy) {
			p.Spec.Ingress[0].Peers = append(p.Spec.Ingress[0].Peers, v1.Peer{FQDN: "example.com"})
		}, "fqdn peers are for egress rules only"},
		{"wildcard of a top-level domain", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[5].FQDN = "*.com" }, "should match"},
		{"name in upper case", func(p *v1.WorkloadPolicy) { p.Spec.Egress[0].Peers[5].FQDN = "API.stripe.com" }, "should match"},
	}
	t.Run("fqdn accepted exactly as policy.ValidateNamePattern accepts it", func(t *testing.T) {
		label63 := strings.Repeat("a", 63)
		name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
		for i, name := range []string{
			"example.com", "api.stripe.com", "*.example.com", "*.s3.amazonaws.com", "_sip._tcp.example.com",
			"a-b.example.com", "1.2.3.example", "x_.example.com", label63 + ".com", name253, "*." + name253,
			"", "com", "*.com", "*", "*.", "example.com.", "Example.com", "a..com", ".example.com",
			"-a.example.com", "a-.example.com", "a.*.example.com", "**.example.com", "*example.com",
			"a*.example.com", "ex ample.com", "exämple.com", label63 + "a.com", "c" + name253, "*.c" + name253,
			"example.com\n", "1.2.3.4/32",
		} {
			p := valid()
			p.Name = fmt.Sprintf("fqdn-%d", i)
			p.Spec.Egress[0].Peers[5].FQDN = name
			err := c.Create(ctx, p)
			if want := policy.ValidateNamePattern(name); (err == nil) != (want == nil) {
				t.Errorf("fqdn %q: API server says %v, ValidateNamePattern says %v", name, err, want)
			}
		}
	})

	t.Run("an ingress proposal naming an fqdn is refused", func(t *testing.T) {
		p := valid()
		p.Name = "proposal-fqdn"
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status.Proposals = []v1.Proposal{{
			Name: "ingress-x-1", Direction: "ingress", Source: "test", Since: metav1.Now(),
			Rule: v1.Rule{Name: "x", Peers: []v1.Peer{{FQDN: "example.com"}}},
		}}
		err := c.Status().Update(ctx, p)
		if err == nil || !strings.Contains(err.Error(), "fqdn peers are for egress rules only") {
			t.Fatalf("status update: %v, want the egress-only refusal", err)
		}
		p.Status.Proposals[0].Direction = "egress"
		if err := c.Status().Update(ctx, p); err != nil {
			t.Fatalf("egress proposal: %v", err)
		}
	})

	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			p.Name = "bad-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			tc.mutate(p)
			err := c.Create(ctx, p)
			if err == nil {
				t.Fatalf("API server accepted %s", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
