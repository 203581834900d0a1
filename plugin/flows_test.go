package plugin

import (
	"strings"
	"testing"
	"time"

	"podwall.io/podwall/policygen/ui"
)

// TestFlowsQuery: the filters become the cluster stream's query, -n's namespace unless -A; bad flags
// are refused before anything is asked.
func TestFlowsQuery(t *testing.T) {
	o := flowsOptions{policygenFlags: policygenFlags{tokenTTL: minTokenTTL}, workload: "Deployment/web", verdict: "deny", port: 5432, follow: true}
	if got, want := o.query("shop").Encode(), "follow=true&namespace=shop&port=5432&verdict=deny&workload=Deployment%2Fweb"; got != want {
		t.Errorf("query %q, want %q", got, want)
	}
	o.allNamespaces, o.follow = true, false
	if q := o.query("shop"); q.Has("namespace") || q.Get("follow") != "false" {
		t.Errorf("-A without --follow: %v", q)
	}
	if _, err := ui.ParseFilter(o.query("shop")); err != nil {
		t.Errorf("policygen refuses the query: %v", err)
	}
	for flags, want := range map[*flowsOptions]string{
		{policygenFlags: policygenFlags{tokenTTL: minTokenTTL}, output: "yaml"}:  "--output",
		{policygenFlags: policygenFlags{tokenTTL: minTokenTTL}, workload: "web"}: "want Kind/name",
		{policygenFlags: policygenFlags{tokenTTL: time.Minute}}:                  "--token-ttl",
	} {
		if err := flags.validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error about %s", flags, err, want)
		}
	}
}

func TestFlowLine(t *testing.T) {
	v := ui.Event{Time: time.Date(2026, 12, 1, 8, 0, 0, 0, time.Local), Namespace: "shop", Workload: "Deployment/web", Pod: "web-0",
		Direction: "egress", Peer: "billing/Deployment/ledger", PeerAddr: "10.2.0.1", Protocol: "TCP", Port: 9090,
		Verdict: "deny", Rule: "default", Count: 3}
	if got, want := flowLine(v), "Dec  1 08:00:00.000  shop/Deployment/web web-0 -> billing/Deployment/ledger (10.2.0.1) port 9090/TCP  DENY  rule default  ×3"; got != want {
		t.Errorf("flowLine:\n%q\nwant\n%q", got, want)
	}
	v.Direction, v.Peer, v.Count = "ingress", "10.2.0.1", 1
	if got := flowLine(v); !strings.Contains(got, "web-0 <- 10.2.0.1 port") || strings.Contains(got, "×") {
		t.Errorf("an ingress from an unnamed address, once: %q", got)
	}
}
