package manifest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

func slice(ns, svc string, typ discoveryv1.AddressType, ready *bool, addrs ...string) discoveryv1.EndpointSlice {
	return discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: typ,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}},
	}
}

func TestDeriveSourcesAndPinnedEndpoints(t *testing.T) {
	slices := []discoveryv1.EndpointSlice{
		slice("shop", "external", discoveryv1.AddressTypeIPv4, nil, "203.0.113.9", "198.51.100.1"),
		slice("shop", "external", discoveryv1.AddressTypeIPv6, ptr.To(true), "2001:db8::1"),
		slice("shop", "external", discoveryv1.AddressTypeIPv4, ptr.To(false), "192.0.2.66"), // unready
		slice("shop", "external", discoveryv1.AddressTypeFQDN, nil, "example.com"),
		slice("other", "external", discoveryv1.AddressTypeIPv4, nil, "192.0.2.77"), // another namespace's
	}
	tpl := template(corev1.EnvVar{Name: "API_URL", Value: "http://api:8080"}, corev1.EnvVar{Name: "EXT", Value: "external:443"})
	got := Derive(Input{Namespace: "shop", Template: tpl, Services: services(), EndpointSlices: slices, DNS: dns,
		Annotations: map[string]string{EgressAnnotation: "api"}})
	wantSources := map[string]string{
		"ingress/m-svc-web": "Service shop/web selects this workload",
		"ingress/m-probes":  "the pod template's probes",
		"egress/m-dns":      "cluster DNS kube-system/kube-dns, every workload's",
		"egress/m-svc-api":  "env API_URL of container web names Service shop/api; annotation podwall.io/egress of the workload names Service shop/api",
		"egress/m-svc-external": "env EXT of container web names Service shop/external (no selector: its EndpointSlices point at " +
			"198.51.100.1, 203.0.113.9, 2001:db8::1)",
	}
	if d := cmp.Diff(wantSources, got.Sources); d != "" {
		t.Errorf("sources (-want +got):\n%s", d)
	}
	ext := got.Egress[len(got.Egress)-1]
	want := v1.Rule{Name: "m-svc-external", Origin: policy.OriginManifest, Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "shop", Name: "external",
		Endpoints: &v1.ServiceEndpoints{Addresses: []v1.IPAddress{"198.51.100.1", "203.0.113.9", "2001:db8::1"}}}}},
		Ports: []v1.Port{{Protocol: "TCP", Port: 443}}}
	if d := cmp.Diff(want, ext); d != "" {
		t.Errorf("selectorless Service rule (-want +got):\n%s", d)
	}
}

func TestGate(t *testing.T) {
	any4 := v1.Peer{CIDR: "0.0.0.0/0"}
	net10 := v1.Peer{CIDR: "10.0.0.0/8"}
	pinned := func(addrs ...v1.IPAddress) v1.Peer {
		return v1.Peer{Service: &v1.ServicePeer{Namespace: "shop", Name: "ext", Endpoints: &v1.ServiceEndpoints{Addresses: addrs}}}
	}
	tcp := func(ports ...int32) []v1.Port {
		var out []v1.Port
		for _, p := range ports {
			out = append(out, v1.Port{Protocol: "TCP", Port: p})
		}
		return out
	}
	m := func(name string, peers []v1.Peer, ports []v1.Port) v1.Rule {
		return v1.Rule{Name: name, Origin: policy.OriginManifest, Peers: peers, Ports: ports}
	}
	web := m("m-svc-web", []v1.Peer{any4}, tcp(8080))
	tests := []struct {
		name             string
		current, derived []v1.Rule
		accepted         bool
		want             []v1.Rule
		proposed         []string // rule names proposed
	}{
		{"unchanged", []v1.Rule{web}, []v1.Rule{web}, false, []v1.Rule{web}, nil},
		{"new rule waits", nil, []v1.Rule{web}, false, nil, []string{"m-svc-web"}},
		{"new rule accepted", nil, []v1.Rule{web}, true, []v1.Rule{web}, nil},
		{"removed rule goes", []v1.Rule{web}, nil, false, nil, nil},
		{"fewer ports apply", []v1.Rule{m("r", []v1.Peer{net10}, tcp(80, 443))}, []v1.Rule{m("r", []v1.Peer{net10}, tcp(443))}, false,
			[]v1.Rule{m("r", []v1.Peer{net10}, tcp(443))}, nil},
		{"narrower CIDR applies", []v1.Rule{m("r", []v1.Peer{any4}, tcp(80))}, []v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, false,
			[]v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, nil},
		{"a new port waits, the old ones still allowed stay", []v1.Rule{m("r", []v1.Peer{net10}, tcp(80, 443))},
			[]v1.Rule{m("r", []v1.Peer{net10}, tcp(443, 8443))}, false, []v1.Rule{m("r", []v1.Peer{net10}, tcp(443))}, []string{"r"}},
		{"every port waits", []v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, []v1.Rule{m("r", []v1.Peer{net10}, nil)}, false,
			[]v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, []string{"r"}},
		{"no port in common drops the rule", []v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, []v1.Rule{m("r", []v1.Peer{net10}, tcp(81))}, false,
			nil, []string{"r"}},
		{"a wider peer waits", []v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, []v1.Rule{m("r", []v1.Peer{any4}, tcp(80))}, false,
			[]v1.Rule{m("r", []v1.Peer{net10}, tcp(80))}, []string{"r"}},
		{"a new endpoint waits, the still listed stay", []v1.Rule{m("r", []v1.Peer{pinned("192.0.2.1", "192.0.2.2")}, tcp(443))},
			[]v1.Rule{m("r", []v1.Peer{pinned("192.0.2.2", "203.0.113.9")}, tcp(443))}, false,
			[]v1.Rule{m("r", []v1.Peer{pinned("192.0.2.2")}, tcp(443))}, []string{"r"}},
		{"a gone endpoint goes", []v1.Rule{m("r", []v1.Peer{pinned("192.0.2.1", "192.0.2.2")}, tcp(443))},
			[]v1.Rule{m("r", []v1.Peer{pinned("192.0.2.2")}, tcp(443))}, false, []v1.Rule{m("r", []v1.Peer{pinned("192.0.2.2")}, tcp(443))}, nil},
		{"a user rule of the name wins", []v1.Rule{{Name: "m-svc-web", Origin: policy.OriginUser, Peers: []v1.Peer{net10}}}, []v1.Rule{web}, false, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, proposals := Gate("ingress", tc.current, tc.derived, map[string]string{"ingress/m-svc-web": "Service shop/web selects this workload"},
				func(string) bool { return tc.accepted })
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("applied (-want +got):\n%s", d)
			}
			var names []string
			for _, p := range proposals {
				names = append(names, p.Rule.Name)
				if p.Name != ProposalName("ingress", p.Rule) || p.Direction != "ingress" {
					t.Errorf("proposal %+v: name or direction wrong", p)
				}
			}
			if d := cmp.Diff(tc.proposed, names); d != "" {
				t.Errorf("proposed (-want +got):\n%s", d)
			}
			// What stays is never wider than what was there, and applying again changes nothing.
			again, _ := Gate("ingress", got, tc.derived, nil, func(string) bool { return false })
			if d := cmp.Diff(got, again); d != "" {
				t.Errorf("not stable (-first +again):\n%s", d)
			}
		})
	}
	if got, _ := Gate("ingress", nil, []v1.Rule{web}, nil, func(string) bool { return false }); got != nil {
		t.Errorf("nothing accepted, got %v", got)
	}
	if a, b := ProposalName("ingress", web), ProposalName("ingress", m("m-svc-web", []v1.Peer{any4}, tcp(8081))); a == b {
		t.Errorf("a changed rule kept its proposal name %s", a)
	}
}
