package learn

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

var (
	api    = v1.Peer{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}
	db     = v1.Peer{Service: &v1.ServicePeer{Namespace: "data", Name: "db"}}
	ext    = v1.Peer{CIDR: "203.0.113.7/32"}
	stripe = v1.Peer{FQDN: "api.stripe.com"}
	addr   = netip.MustParseAddr
)

func obs(dir policy.Direction, ip string, peer v1.Peer, proto policy.Protocol, port int32) Observation {
	return Observation{Direction: dir, Addr: addr(ip), Peer: peer, Protocol: proto, Port: port}
}

func TestMerge(t *testing.T) {
	manifest := v1.Rule{Name: "m-svc-web", Origin: "manifest", Peers: []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}
	lb := v1.Rule{Name: "m-svc-lb", Origin: "manifest", Peers: []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 9090}}}
	user := v1.Rule{Name: "l-deployment-api", Origin: "user", Peers: []v1.Peer{api}, Ports: []v1.Port{{Protocol: "TCP", Port: 1}}}
	probes := v1.Rule{Name: "m-probes", Origin: "manifest", Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}
	meshDeny := v1.LoopbackRule{Name: "m-istio-proxy", Origin: "manifest", Action: "deny", Ports: []v1.Port{
		{Protocol: "TCP", Port: 15000}, {Protocol: "TCP", Port: 15020}, {Protocol: "TCP", Port: 15090}}}
	userDeny := v1.LoopbackRule{Name: "no-status", Origin: "user", Action: "deny", Ports: []v1.Port{{Protocol: "TCP", Port: 15020}}}
	loop := func(port int32) Observation { return obs(policy.Loopback, "127.0.0.1", v1.Peer{}, "TCP", port) }
	// As status.openPorts says: Service lb is public (a LoadBalancer), web is not.
	open := []v1.OpenPort{{Rule: "m-svc-lb", Service: "shop/lb", Protocol: "TCP", Port: 9090, Reason: v1.OpenPublic},
		{Rule: "m-svc-web", Service: "shop/web", Protocol: "TCP", Port: 8080, Reason: v1.OpenLearning}}
	tests := []struct {
		name    string
		spec    v1.WorkloadPolicySpec
		obs     []Observation
		want    v1.WorkloadPolicySpec
		learned int
	}{
		{"new peers become rules, ports merge",
			v1.WorkloadPolicySpec{Mode: policy.Learn},
			[]Observation{
				obs(policy.Egress, "10.1.0.5", api, "TCP", 8000), obs(policy.Egress, "10.1.0.6", api, "TCP", 8001),
				obs(policy.Egress, "10.1.0.5", api, "UDP", 53), obs(policy.Egress, "10.0.0.9", db, "TCP", 5432),
				obs(policy.Ingress, "203.0.113.7", ext, "TCP", 443), obs(policy.Loopback, "127.0.0.1", v1.Peer{CIDR: "127.0.0.1/32"}, "TCP", 15000),
			},
			v1.WorkloadPolicySpec{Mode: policy.Learn,
				Ingress: []v1.Rule{{Name: "l-cidr-203-0-113-7-32", Origin: "learned", Peers: []v1.Peer{ext}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}}},
				Egress: []v1.Rule{
					{Name: "l-deployment-api", Origin: "learned", Peers: []v1.Peer{api}, Ports: []v1.Port{{Protocol: "TCP", Port: 8000, EndPort: 8001}, {Protocol: "UDP", Port: 53}}},
					{Name: "l-svc-db.data", Origin: "learned", Peers: []v1.Peer{db}, Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
				}},
			5},
		{"already allowed is not learned",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: []v1.Rule{probes}, Egress: []v1.Rule{user}},
			[]Observation{obs(policy.Ingress, "10.0.0.1", v1.Peer{Nodes: true}, "TCP", 8080), obs(policy.Egress, "10.1.0.5", api, "TCP", 1)},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: []v1.Rule{probes}, Egress: []v1.Rule{user}},
			0},
		{"a Service's open rule does not hide its callers, unless the Service is public",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: []v1.Rule{manifest, lb}},
			[]Observation{obs(policy.Ingress, "10.1.0.5", api, "TCP", 8080), obs(policy.Ingress, "203.0.113.7", ext, "TCP", 8080),
				obs(policy.Ingress, "203.0.113.7", ext, "TCP", 9090)},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: []v1.Rule{manifest, lb,
				{Name: "l-deployment-api", Origin: "learned", Peers: []v1.Peer{api}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
				{Name: "l-cidr-203-0-113-7-32", Origin: "learned", Peers: []v1.Peer{ext}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
			}},
			2},
		{"loopback: a port only a manifest deny names is learned, a person's deny stands",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Loopback: []v1.LoopbackRule{meshDeny, userDeny}},
			[]Observation{loop(15000), loop(15090), loop(15000), loop(15020), loop(8080)},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Loopback: []v1.LoopbackRule{meshDeny, userDeny,
				{Name: "l-loopback", Origin: "learned", Action: "allow", Ports: []v1.Port{{Protocol: "TCP", Port: 15000}, {Protocol: "TCP", Port: 15090}}}}},
			2},
		{"loopback: a user's allow already allows",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Loopback: []v1.LoopbackRule{meshDeny,
				{Name: "admin", Origin: "user", Action: "allow", Ports: []v1.Port{{Protocol: "TCP", Port: 15000}}}}},
			[]Observation{loop(15000)},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Loopback: []v1.LoopbackRule{meshDeny,
				{Name: "admin", Origin: "user", Action: "allow", Ports: []v1.Port{{Protocol: "TCP", Port: 15000}}}}},
			0},
		{"a user rule holding the name is left alone",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Egress: []v1.Rule{user}},
			[]Observation{obs(policy.Egress, "10.1.0.5", api, "TCP", 8000)},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Egress: []v1.Rule{user}},
			0},
		{"nothing in Protect",
			v1.WorkloadPolicySpec{Mode: policy.Protect},
			[]Observation{obs(policy.Egress, "10.1.0.5", api, "TCP", 8000)},
			v1.WorkloadPolicySpec{Mode: policy.Protect},
			0},
		{"the addresses of one name make one rule; a known pattern or address covers a name",
			v1.WorkloadPolicySpec{Mode: policy.Learn, Egress: []v1.Rule{
				{Name: "s3", Origin: "user", Peers: []v1.Peer{{FQDN: "*.s3.amazonaws.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				{Name: "net", Origin: "user", Peers: []v1.Peer{{CIDR: "198.51.100.0/24"}}},
			}},
			[]Observation{
				obs(policy.Egress, "203.0.113.7", stripe, "TCP", 443), obs(policy.Egress, "203.0.113.8", stripe, "TCP", 443),
				obs(policy.Egress, "2001:db8::7", stripe, "TCP", 80),
				obs(policy.Egress, "203.0.113.9", v1.Peer{FQDN: "bucket.s3.amazonaws.com"}, "TCP", 443),
				obs(policy.Egress, "203.0.113.9", v1.Peer{FQDN: "s3.amazonaws.com"}, "TCP", 443), // not under the wildcard
				obs(policy.Egress, "198.51.100.3", v1.Peer{FQDN: "example.org"}, "UDP", 53),
			},
			v1.WorkloadPolicySpec{Mode: policy.Learn, Egress: []v1.Rule{
				{Name: "s3", Origin: "user", Peers: []v1.Peer{{FQDN: "*.s3.amazonaws.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				{Name: "net", Origin: "user", Peers: []v1.Peer{{CIDR: "198.51.100.0/24"}}},
				{Name: "l-fqdn-api.stripe.com", Origin: "learned", Peers: []v1.Peer{stripe}, Ports: []v1.Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 443}}},
				{Name: "l-fqdn-s3.amazonaws.com", Origin: "learned", Peers: []v1.Peer{{FQDN: "s3.amazonaws.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
			}},
			3},
		{"nothing in Monitor",
			v1.WorkloadPolicySpec{Mode: policy.Monitor},
			[]Observation{obs(policy.Egress, "10.1.0.5", api, "TCP", 8000)},
			v1.WorkloadPolicySpec{Mode: policy.Monitor},
			0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec.DeepCopy()
			n := Merge(spec, open, tc.obs, Collapse{})
			if d := cmp.Diff(&tc.want, spec); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
			if n != tc.learned {
				t.Errorf("learned %d, want %d", n, tc.learned)
			}
		})
	}
}

func TestMergeCollapsesNamespace(t *testing.T) {
	wl := func(ns, name string) v1.Peer {
		return v1.Peer{Workload: &v1.WorkloadPeer{Namespace: ns, WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: name}}}
	}
	in := func(peer v1.Peer, port int32) Observation { return obs(policy.Ingress, "10.2.0.1", peer, "TCP", port) }
	rule := func(peer v1.Peer, ports ...v1.Port) v1.Rule {
		return v1.Rule{Name: RuleName(peer), Origin: "learned", Peers: []v1.Peer{peer}, Ports: ports}
	}
	tcp := func(port, end int32) v1.Port { return v1.Port{Protocol: "TCP", Port: port, EndPort: end} }
	data := NamespacePeer("data")
	collapsed := []v1.Rule{rule(wl("data", "a"), tcp(9090, 0)), rule(data, tcp(8080, 0))}
	narrow := v1.Peer{Selector: &v1.SelectorPeer{NamespaceSelector: data.Selector.NamespaceSelector,
		PodSelector: &v1.LabelSelector{MatchLabels: map[string]v1.LabelValue{"app": "a"}}}}
	user := v1.Rule{Name: "calls-a", Origin: "user", Peers: []v1.Peer{wl("data", "a")}, Ports: []v1.Port{tcp(5432, 0)}}
	manifest := v1.Rule{Name: "m-svc-db.data", Origin: "manifest", Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "data", Name: "db"}}}, Ports: []v1.Port{tcp(5432, 0)}}
	cache := rule(v1.Peer{Service: &v1.ServicePeer{Namespace: "data", Name: "cache"}}, tcp(5432, 0))
	three := Collapse{At: 3, Namespace: "shop"}
	tests := []struct {
		name     string
		collapse Collapse
		ingress  []v1.Rule
		obs      []Observation
		want     []v1.Rule
		learned  int
	}{
		{"below the threshold every caller stays named", three, nil,
			[]Observation{in(wl("data", "a"), 8080), in(wl("data", "b"), 8080), in(wl("data", "c"), 9090)},
			[]v1.Rule{rule(wl("data", "a"), tcp(8080, 0)), rule(wl("data", "b"), tcp(8080, 0)), rule(wl("data", "c"), tcp(9090, 0))},
			3},
		{"at the threshold the callers become their namespace, on that port only", three, nil,
			[]Observation{in(wl("data", "a"), 9090), in(wl("data", "a"), 8080), in(wl("data", "b"), 8080), in(wl("data", "c"), 8080)},
			collapsed, 4},
		{"a later caller of a collapsed namespace adds nothing", three, collapsed,
			[]Observation{in(wl("data", "d"), 8080), in(wl("data", "a"), 8080), in(wl("data", "b"), 8080)},
			collapsed, 0},
		{"on another port it is learned as before", three, collapsed,
			[]Observation{in(wl("data", "d"), 9090), in(wl("data", "d"), 8081), obs(policy.Ingress, "10.2.0.1", wl("data", "d"), "UDP", 8080)},
			append(slices.Clone(collapsed), rule(wl("data", "d"), tcp(8081, 0), tcp(9090, 0), v1.Port{Protocol: "UDP", Port: 8080})),
			3},
		{"the policy's own namespace never collapses", three, nil,
			[]Observation{in(wl("", "a"), 8080), in(wl("", "b"), 8080), in(wl("", "c"), 8080),
				in(wl("shop", "d"), 8080), in(wl("shop", "e"), 8080), in(wl("shop", "f"), 8080)},
			[]v1.Rule{rule(wl("", "a"), tcp(8080, 0)), rule(wl("", "b"), tcp(8080, 0)), rule(wl("", "c"), tcp(8080, 0)),
				rule(wl("shop", "d"), tcp(8080, 0)), rule(wl("shop", "e"), tcp(8080, 0)), rule(wl("shop", "f"), tcp(8080, 0))},
			6},
		{"0 never collapses", Collapse{Namespace: "shop"}, nil,
			[]Observation{in(wl("data", "a"), 8080), in(wl("data", "b"), 8080), in(wl("data", "c"), 8080), in(wl("data", "d"), 8080)},
			[]v1.Rule{rule(wl("data", "a"), tcp(8080, 0)), rule(wl("data", "b"), tcp(8080, 0)), rule(wl("data", "c"), tcp(8080, 0)), rule(wl("data", "d"), tcp(8080, 0))},
			4},
		{"manifest and user rules and Services stay", three, []v1.Rule{user, manifest, cache},
			[]Observation{in(wl("data", "a"), 5432), in(v1.Peer{Service: &v1.ServicePeer{Namespace: "data", Name: "db"}}, 5432),
				in(wl("data", "b"), 5432), in(wl("data", "c"), 5432), in(wl("data", "d"), 5432)},
			[]v1.Rule{user, manifest, cache, rule(data, tcp(5432, 0))},
			3},
		{"directions and protocols count apart", three, nil,
			[]Observation{in(wl("data", "a"), 53), in(wl("data", "b"), 53), obs(policy.Egress, "10.2.0.1", wl("data", "c"), "TCP", 53),
				obs(policy.Ingress, "10.2.0.1", wl("data", "c"), "UDP", 53)},
			[]v1.Rule{rule(wl("data", "a"), tcp(53, 0)), rule(wl("data", "b"), tcp(53, 0)), rule(wl("data", "c"), v1.Port{Protocol: "UDP", Port: 53})},
			4},
		{"a range is split around the port, a whole protocol stays, a rule left without ports goes", three,
			[]v1.Rule{rule(wl("data", "a"), tcp(8000, 8002)), rule(wl("data", "b"), v1.Port{Protocol: "TCP"}), rule(wl("data", "c"), tcp(8002, 0))},
			[]Observation{in(wl("data", "d"), 8001), in(wl("data", "c"), 8001)},
			[]v1.Rule{rule(wl("data", "a"), tcp(8000, 0), tcp(8002, 0)), rule(wl("data", "b"), v1.Port{Protocol: "TCP"}), rule(wl("data", "c"), tcp(8002, 0)),
				rule(data, tcp(8001, 0))},
			1},
		{"a selector narrower than the namespace does not cover", three,
			[]v1.Rule{{Name: "app-a", Origin: "user", Peers: []v1.Peer{narrow}, Ports: []v1.Port{tcp(8080, 0)}}},
			[]Observation{in(wl("data", "a"), 8080)},
			[]v1.Rule{{Name: "app-a", Origin: "user", Peers: []v1.Peer{narrow}, Ports: []v1.Port{tcp(8080, 0)}}, rule(wl("data", "a"), tcp(8080, 0))},
			1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := &v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: slices.Clone(tc.ingress)}
			n := Merge(spec, nil, tc.obs, tc.collapse)
			var wantEgress []v1.Rule
			for _, o := range tc.obs {
				if o.Direction == policy.Egress {
					wantEgress = append(wantEgress, rule(o.Peer, tcp(o.Port, 0)))
				}
			}
			if d := cmp.Diff(&v1.WorkloadPolicySpec{Mode: policy.Learn, Ingress: tc.want, Egress: wantEgress}, spec); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
			if n != tc.learned {
				t.Errorf("learned %d, want %d", n, tc.learned)
			}
		})
	}
}

func TestWidenManyPorts(t *testing.T) {
	spec := &v1.WorkloadPolicySpec{Mode: policy.Learn}
	var o []Observation
	for p := int32(1000); p < 1000+2*(MaxPortsPerRule+1); p += 2 {
		o = append(o, obs(policy.Egress, "10.1.0.5", api, "TCP", p))
	}
	o = append(o, obs(policy.Egress, "10.1.0.5", api, "UDP", 53))
	Merge(spec, nil, o, Collapse{})
	want := []v1.Port{{Protocol: "TCP"}, {Protocol: "UDP", Port: 53}}
	if d := cmp.Diff(want, spec.Egress[0].Ports); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
}

func TestMergeStopsAtTheRuleLimit(t *testing.T) {
	spec := &v1.WorkloadPolicySpec{Mode: policy.Learn}
	var o []Observation
	for i := range MaxRules + 10 {
		ip := netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)})
		o = append(o, obs(policy.Egress, ip.String(), v1.Peer{CIDR: ip.String() + "/32"}, "TCP", 443))
	}
	if n := Merge(spec, nil, o, Collapse{}); n != MaxRules || len(spec.Egress) != MaxRules {
		t.Errorf("learned %d into %d rules, want %d", n, len(spec.Egress), MaxRules)
	}
}

func TestRuleName(t *testing.T) {
	long := v1.Peer{Workload: &v1.WorkloadPeer{Namespace: "ns", WorkloadRef: v1.WorkloadRef{Kind: "StatefulSet", Name: "a-very-long-name-that-goes-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on"}}}
	for _, tc := range []struct {
		peer v1.Peer
		want string
	}{
		{api, "l-deployment-api"},
		{db, "l-svc-db.data"},
		{v1.Peer{CIDR: "2001:db8::1/128"}, "l-cidr-2001-db8--1-128"},
		{v1.Peer{Nodes: true}, "l-nodes"},
		{NamespacePeer("data"), "l-namespace-data"},
		{stripe, "l-fqdn-api.stripe.com"},
		{v1.Peer{FQDN: "_sip._tcp.example.com"}, "l-fqdn--sip.-tcp.example.com"},
		{long, "l-statefulset-a-very-long-name-that-goes-on-and-on-and-on-and-on-and-on-and-on-and-on-a-f1d50196d7a2"},
	} {
		if got := RuleName(tc.peer); got != tc.want || len(got) > 100 {
			t.Errorf("RuleName = %q (%d), want %q", got, len(got), tc.want)
		}
	}
}
