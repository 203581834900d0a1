package ui

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/workload"
)

func TestBuildGraph(t *testing.T) {
	web := v1.WorkloadPolicy{Spec: *testSpec()}
	web.Namespace, web.Name, web.Spec.Mode = "shop", "deployment-web", policy.Protect
	api := v1.WorkloadPolicy{Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}
	api.Namespace, api.Name = "shop", "deployment-api"
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	fs := NewFlows(0)
	for _, v := range []Event{
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "shop/Deployment/db", PeerAddr: "10.1.0.3", Protocol: "TCP", Port: 5432, Verdict: "deny", Rule: "default"},
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "shop/Deployment/db", PeerAddr: "10.1.0.3", Protocol: "TCP", Port: 5432, Verdict: "deny", Rule: "default"},
		// Outside addresses without a name group by the rule's CIDR holding them, else their /24.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "ingress", Peer: "10.9.0.1", PeerAddr: "10.9.0.1", Protocol: "TCP", Port: 80, Verdict: "allow", Rule: "ingress/from-lb"},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "ingress", Peer: "192.0.2.7", PeerAddr: "192.0.2.7", Protocol: "TCP", Port: 80, Verdict: "audit", Rule: "default"},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "ingress", Peer: "192.0.2.8", PeerAddr: "192.0.2.8", Protocol: "TCP", Port: 81, Verdict: "audit", Rule: "default"},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "loopback", Peer: "127.0.0.1", PeerAddr: "127.0.0.1", Protocol: "TCP", Port: 15000, Verdict: "deny"},
		// The nodes a rule allows and the nodes a verdict names are one graph node.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "ingress", Peer: "nodes", PeerAddr: "172.18.0.2", Protocol: "TCP", Port: 9090, Verdict: "deny", Rule: "default"},
		// A name the pod resolved an outside address from names the node, as a rule's name does.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "203.0.113.7", PeerAddr: "203.0.113.7", Name: "api.stripe.com", Protocol: "TCP", Port: 80, Verdict: "deny", Rule: "default"},
		// A refused DNS query goes to the resolver, whatever name it asked for.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "kube-system/Service/kube-dns", PeerAddr: "10.96.0.10", Name: "x.example.org",
			Protocol: "UDP", Port: 53, Verdict: "deny", Rule: "default", Evaluator: policyapi.QueryEvaluator},
		// A learned rule's allow, and an allow in Learn mode, are learned.
		{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "shop/Deployment/api", PeerAddr: "10.1.0.2", Protocol: "TCP", Port: 9001, Verdict: "allow", Rule: "egress/learned-api"},
		{Namespace: "shop", Workload: "Deployment/api", Direction: "egress", Peer: "shop/Deployment/db", PeerAddr: "10.1.0.3", Protocol: "TCP", Port: 5432, Verdict: "allow", Rule: "default", Mode: "Learn"},
	} {
		v.Time, v.Count = at, 1
		fs.Add(v)
	}
	pods := func(k workload.Key) []PodState {
		if k.Name == "web" {
			return []PodState{{Pod: "web-1", Mode: policy.Protect}}
		}
		return nil
	}
	got := BuildGraph("1h", []v1.WorkloadPolicy{web, api}, fs.Since(at.Add(-time.Hour)), pods)

	var nodes, edges []string
	for _, n := range got.Nodes {
		nodes = append(nodes, fmt.Sprintf("%s [%s %s] %q %s", n.ID, n.Kind, n.Parent, n.Label, n.Mode))
	}
	for _, e := range got.Edges {
		edges = append(edges, fmt.Sprintf("%s -> %s %s %q ×%d %q %s/%s recent=%d", e.From, e.To, e.Verdict, e.Ports, e.Count, e.Rules, e.Namespace, e.Policy, len(e.Recent)))
	}
	wantNodes := []string{
		`*.s3.amazonaws.com [outside group:outside] "*.s3.amazonaws.com" `,
		`10.0.0.0/8 [outside group:outside] "10.0.0.0/8" `,
		`192.0.2.0/24 [outside group:outside] "192.0.2.0/24" `,
		`api.stripe.com [outside group:outside] "api.stripe.com" `,
		`group:kube-system [group ] "kube-system" `,
		`group:outside [group ] "outside the cluster" `,
		`group:shop [group ] "shop" `,
		`kube-system/Service/kube-dns [peer group:kube-system] "Service/kube-dns" `,
		`nodes [peer ] "nodes" `,
		`pods labelled app=cache of this namespace [peer ] "pods labelled app=cache of this namespace" `,
		`shop/Deployment/api [workload group:shop] "api" Learn`,
		`shop/Deployment/db [peer group:shop] "db" `,
		`shop/Deployment/web [workload group:shop] "web" Protect`,
	}
	wantEdges := []string{
		`10.0.0.0/8 -> shop/Deployment/web allowed ["TCP 80" "every port"] ×1 ["ingress/from-lb"] shop/deployment-web recent=1`,
		`192.0.2.0/24 -> shop/Deployment/api audited ["TCP 80" "TCP 81"] ×2 ["default"] shop/deployment-api recent=2`,
		`nodes -> shop/Deployment/web allowed ["TCP 8080"] ×0 ["ingress/probes"] shop/deployment-web recent=0`,
		`nodes -> shop/Deployment/web denied ["TCP 9090"] ×1 ["default"] shop/deployment-web recent=1`,
		`shop/Deployment/api -> shop/Deployment/db learned ["TCP 5432"] ×1 ["default"] shop/deployment-api recent=1`,
		`shop/Deployment/web -> *.s3.amazonaws.com allowed ["TCP 443"] ×0 ["egress/stripe"] shop/deployment-web recent=0`,
		`shop/Deployment/web -> api.stripe.com allowed ["TCP 443"] ×0 ["egress/stripe"] shop/deployment-web recent=0`,
		`shop/Deployment/web -> api.stripe.com denied ["TCP 80"] ×1 ["default"] shop/deployment-web recent=1`,
		`shop/Deployment/web -> kube-system/Service/kube-dns allowed ["UDP 53, TCP 53"] ×0 ["egress/dns"] shop/deployment-web recent=0`,
		`shop/Deployment/web -> kube-system/Service/kube-dns denied ["UDP 53"] ×1 ["default"] shop/deployment-web recent=1`,
		`shop/Deployment/web -> pods labelled app=cache of this namespace learned ["TCP 9000-9010, every UDP port"] ×0 ["egress/learned-api"] shop/deployment-web recent=0`,
		`shop/Deployment/web -> shop/Deployment/api learned ["TCP 9000-9010, every UDP port" "TCP 9001"] ×1 ["egress/learned-api"] shop/deployment-web recent=1`,
		`shop/Deployment/web -> shop/Deployment/db denied ["TCP 5432"] ×2 ["default"] shop/deployment-web recent=2`,
	}
	if diff := cmp.Diff(wantNodes, nodes); diff != "" {
		t.Errorf("nodes [kind parent] label mode (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantEdges, edges); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
	for _, n := range got.Nodes {
		if n.ID == "shop/Deployment/web" && (len(n.Pods) != 1 || n.Policy != "deployment-web" || n.Rules[policy.OriginUser] != 2) {
			t.Errorf("web's node: %+v, want its pod, policy and rule counts", n)
		}
	}
}

// TestFlowsWindow: a flow counts only its minutes within the window, and is left out when it has none.
func TestFlowsWindow(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	fs := NewFlows(0)
	deny := Event{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "shop/Deployment/db", PeerAddr: "10.1.0.3",
		Protocol: "TCP", Port: 5432, Verdict: "deny", Rule: "default"}
	for _, ago := range []time.Duration{2 * time.Minute, 30 * time.Minute, 3 * time.Hour, 25 * time.Hour} {
		v := deny
		v.Time, v.Count = now.Add(-ago), uint64(ago/time.Minute)
		fs.Add(v)
	}
	old := deny
	old.Port, old.Time, old.Count = 5433, now.Add(-2*time.Hour), 1
	fs.Add(old)
	for window, want := range map[string]map[uint16]uint64{"5m": {5432: 2}, "1h": {5432: 32}, "24h": {5432: 212, 5433: 1}} {
		got := map[uint16]uint64{}
		for _, f := range fs.Since(now.Add(-Windows[window])) {
			got[f.Port] = f.Count
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("window %s: connections by port (-want +got):\n%s", window, diff)
		}
	}
}

// TestFlowsBounded: past its bound, the flow seen longest ago goes.
func TestFlowsBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	fs := NewFlows(3)
	for i := range 5 {
		fs.Add(Event{Namespace: "shop", Workload: "Deployment/web", Direction: "egress", Peer: "x", Protocol: "TCP", Port: uint16(i + 1),
			Verdict: "deny", Count: 1, Time: now.Add(time.Duration(i) * time.Minute)})
	}
	got := map[uint16]bool{}
	for _, f := range fs.Since(now.Add(-time.Hour)) {
		got[f.Port] = true
	}
	if diff := cmp.Diff(map[uint16]bool{3: true, 4: true, 5: true}, got); diff != "" {
		t.Errorf("flows kept (-want +got):\n%s", diff)
	}
}
