package ui_test

import (
	"context"
	"fmt"
	"time"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// mapNamespaces are the service map's world: 30 workloads in 5 namespaces, the i-th of namespace n
// at 10.n.0.i+1. newWorld made shop's first three and billing's first.
var mapNamespaces = []struct {
	ns    string
	net   int
	names []string
}{
	{"shop", 1, []string{"web", "api", "db", "cart", "checkout", "frontend"}},
	{"billing", 2, []string{"ledger", "invoices", "tax", "reports", "exporter", "mailer"}},
	{"catalog", 3, []string{"search", "indexer", "images", "reviews", "pricing", "inventory"}},
	{"payments", 4, []string{"gateway", "fraud", "vault", "refunds", "settlement", "webhooks"}},
	{"identity", 5, []string{"auth", "users", "sessions", "tokens", "audit", "ldap-sync"}},
}

// mapModes are the modes the world's policies have (seedPolicies'); the others are in Learn.
var mapModes = map[string]policy.Mode{"web": policy.Protect, "api": policy.Monitor, "db": policy.Protect}

// seedMap adds the workloads newWorld has not made, waits for their 30 policies, and reports their
// traffic: each workload reaches the next of its namespace (learned, as Learn allows it; web by its
// rule to api, api audited in Monitor, db denied in Protect), and a few cross namespaces or leave the
// cluster; one flow is two hours old.
func (w *world) seedMap() {
	t := w.t
	for _, n := range mapNamespaces {
		if n.net > 2 {
			pgtest.Namespace(t, w.c, n.ns, map[string]string{"podwall.io/inject": "enabled"})
		}
		for i, name := range n.names {
			if w.pods[name] == nil {
				w.pods[name] = w.cluster.Deployment(n.ns, name, name, mapIP(n.net, i))[0]
			}
		}
	}
	testutil.Await(t, "30 WorkloadPolicies", 60*time.Second, func() error {
		var list v1.WorkloadPolicyList
		if err := w.c.List(context.Background(), &list); err != nil {
			return err
		}
		if len(list.Items) != 30 {
			return fmt.Errorf("%d WorkloadPolicies", len(list.Items))
		}
		return nil
	})
	for _, n := range mapNamespaces {
		for i, name := range n.names {
			e := times(entry(policy.Allow, policy.Egress, mapIP(n.net, (i+1)%len(n.names)), 8080), uint64(i+1))
			switch w.mode(name) {
			case policy.Protect:
				e.Verdict = policy.Deny
				if name == "web" { // web's user rule web-to-api
					e.Verdict, e.Rule, e.Evaluator = policy.Allow, "egress/web-to-api", ""
				}
			case policy.Monitor:
				e.Verdict = policy.Audit
			}
			w.report(name, w.mode(name), e)
		}
	}
	w.report("checkout", policy.Learn, times(entry(policy.Allow, policy.Egress, mapIP(4, 0), 443), 12))
	w.report("ledger", policy.Learn, times(entry(policy.Allow, policy.Egress, mapIP(5, 0), 443), 3))
	w.report("api", policy.Monitor, times(entry(policy.Audit, policy.Egress, mapIP(5, 0), 443), 2))
	w.report("search", policy.Learn, times(entry(policy.Allow, policy.Egress, mapIP(1, 2), 5432), 7))
	w.report("web", policy.Protect, times(entry(policy.Deny, policy.Egress, mapIP(2, 0), 9090), 4))
	ldap := times(entry(policy.Allow, policy.Egress, "203.0.113.40", 636), 5)
	ldap.Name = "ldap.example.com"
	w.report("ldap-sync", policy.Learn, ldap)
	w.report("gateway", policy.Learn, times(entry(policy.Allow, policy.Egress, "198.51.100.20", 443), 9))
	w.report("fraud", policy.Learn, times(entry(policy.Allow, policy.Egress, "198.51.100.21", 443), 1))
	old := times(entry(policy.Allow, policy.Egress, mapIP(2, 3), 9999), 1)
	old.LastSeen = time.Now().Add(-2 * time.Hour)
	w.report("audit", policy.Learn, old)
}

func (w *world) mode(name string) policy.Mode {
	if m, ok := mapModes[name]; ok {
		return m
	}
	return policy.Learn
}

func mapIP(net, i int) string { return fmt.Sprintf("10.%d.0.%d", net, i+1) }

// times is e reported count times.
func times(e policy.ReportEntry, count uint64) policy.ReportEntry {
	e.Count = count
	return e
}
