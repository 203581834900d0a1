package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
)

// checkEvidence: api's sidecar, running the revision policygen serves it, audits a connection in
// Monitor; policygen lists it as would-deny, and api's policy page shows it, the most recent first,
// with the window's coverage. (What api reported in the live view's turn may be listed too, if
// policygen had not counted api's subscriber yet: those reports name no revision.)
func checkEvidence(t *testing.T, ctx context.Context, w *world) {
	served := w.served("api")
	key := client.ObjectKey{Namespace: "shop", Name: "deployment-api"}
	testutil.Await(t, "api's coverage measured", 30*time.Second, func() error {
		var p v1.WorkloadPolicy
		if err := w.c.Get(context.Background(), key, &p); err != nil {
			return err
		}
		if p.Status.Coverage == nil {
			return errors.New("no coverage in status yet")
		}
		return nil
	})
	audit := entry(policy.Audit, policy.Egress, "203.0.113.25", 25)
	audit.Count = 3
	w.post("api", policy.Report{Revision: served.Revision, Mode: policy.Monitor, Entries: []policy.ReportEntry{audit}})
	testutil.Await(t, "api's would-deny flow in status", 30*time.Second, func() error {
		var p v1.WorkloadPolicy
		if err := w.c.Get(context.Background(), key, &p); err != nil {
			return err
		}
		for _, f := range p.Status.WouldDeny {
			if f.Peer == "cidr:203.0.113.25/32" {
				return nil
			}
		}
		return fmt.Errorf("the audited flow is not in status.wouldDeny yet: %+v", p.Status.WouldDeny)
	})

	navigate(t, ctx, "#/policy/shop/deployment-api")
	if _, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById('policy-title').textContent.startsWith('shop / Deployment/api') &&
		document.querySelector('#would-deny tbody tr') && document.getElementById('policy-title').textContent`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("api's policy page with would-deny flows: %v", err)
	}
	rows := waitRows(t, ctx, "#would-deny", time.Second, func(r [][]string) bool { return len(r) > 0 })
	if r := rows[0]; r[0] != "egress" || r[1] != "cidr:203.0.113.25/32" || r[2] != "TCP 25" || r[3] != "3" {
		t.Errorf("first would-deny row %q, want egress to cidr:203.0.113.25/32 on TCP 25, 3 connections", r)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({note: document.getElementById('would-deny-note').textContent,
		noteClass: document.getElementById('would-deny-note').className, coverage: document.getElementById('coverage').textContent})`))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Protect would deny %d flow", len(rows)); !strings.HasPrefix(state["note"], want) || state["noteClass"] != "bad" {
		t.Errorf("would-deny note %q (class %q), want it to start %q, marked bad", state["note"], state["noteClass"], want)
	}
	if c := state["coverage"]; !strings.HasPrefix(c, "Coverage since ") || !strings.Contains(c, "of 1 pods reported") || !strings.Contains(c, "connections; ") {
		t.Errorf("coverage in words: %q", c)
	}
	screenshot(t, ctx, "policy-evidence")
}

// served is the policy policygen serves the workload's pod, as its sidecar polls it.
func (w *world) served(workloadName string) policy.Policy {
	w.t.Helper()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(w.url, "/ui/")+policy.PolicyPath+"?wait=0", nil)
	req.Header.Set("Authorization", "Bearer "+w.cluster.Token(w.pods[workloadName], "podwall"))
	resp, err := w.https.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var p policy.Policy
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("poll from %s: %s", workloadName, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		w.t.Fatalf("policy served to %s: %v", workloadName, err)
	}
	return p
}
