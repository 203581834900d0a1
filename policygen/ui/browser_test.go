package ui_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/ui"
)

// tableJS returns a table's body rows as arrays of cell texts.
const tableJS = `[...document.querySelectorAll('%s tbody tr')].map(r => [...r.cells].map(c => c.textContent))`

// TestUI runs policygen on a real API server with seeded workloads, then drives the UI in headless
// Chromium (skipped when there is none) and checks access rules over plain HTTP. One policygen per
// process: its controllers' names are registered globally.
func TestUI(t *testing.T) {
	w := newWorld(t)
	t.Run("browser", func(t *testing.T) { testBrowser(t, w) })
	t.Run("access", func(t *testing.T) { testAccess(t, w) })
}

// testBrowser drives the UI in headless Chromium.
func testBrowser(t *testing.T, w *world) {
	ctx := browser(t)
	// One deny before anyone looks: the live view must replay it and the workloads page count it.
	w.report("web", policy.Protect, entry(policy.Deny, policy.Egress, "10.1.0.3", 5432))
	// A sidecar of db that enforces a weaker mode than its policy's, its config file refused.
	w.post("db", policy.Report{Mode: policy.Monitor, Entries: []policy.ReportEntry{}, Config: &policy.SidecarConfig{
		FailMode: "closed", LogAllows: "first", LogRate: 100, LogBurst: 200, File: policy.ConfigRefused, Message: "key \"fail-mode\""}})
	// A sidecar of api from before an upgrade, configured to fail open: weakened.
	w.poll("api", "v0.0.1-old", "fail=open")

	if err := chromedp.Do(ctx, chromedp.Navigate(w.url)); err != nil {
		t.Fatalf("open the UI: %v", err)
	}
	signIn(t, ctx, w.viewer)
	t.Run("workloads", func(t *testing.T) { checkWorkloads(t, ctx, w) })
	t.Run("live", func(t *testing.T) { checkLive(t, ctx, w) })
	t.Run("policy read-only", func(t *testing.T) { checkReadOnlyPolicy(t, ctx, w) })
	t.Run("evidence", func(t *testing.T) { checkEvidence(t, ctx, w) })
	t.Run("map", func(t *testing.T) { checkMap(t, ctx, w) })
	t.Run("map offline", func(t *testing.T) { checkMapOffline(t, ctx, w) })
	t.Run("flows", func(t *testing.T) { checkFlows(t, ctx, w) })
	t.Run("looks", func(t *testing.T) { checkLooks(t, ctx) })
	t.Run("operator changes a mode", func(t *testing.T) { checkOperator(t, ctx, w) })
	t.Run("operator accepts a proposal", func(t *testing.T) { checkAcceptProposal(t, ctx, w) })
	t.Run("screenshots", func(t *testing.T) { takeScreenshots(t, ctx) })
}

// signIn pastes a token into the page, as a person would.
func signIn(t *testing.T, ctx context.Context, token string) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.WaitVisible("#token"), chromedp.SendKeys("#token", token), chromedp.Click("#signin-button"))
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
}

// waitRows polls a table's rows until ok accepts them or the timeout passes.
func waitRows(t *testing.T, ctx context.Context, table string, timeout time.Duration, ok func([][]string) bool) [][]string {
	t.Helper()
	var got [][]string
	testutil.Eventually(t, timeout, func() error {
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[[][]string](fmt.Sprintf(tableJS, table))); err != nil {
			return err
		}
		if !ok(got) {
			return fmt.Errorf("%s shows %q", table, got)
		}
		return nil
	})
	return got
}

func checkWorkloads(t *testing.T, ctx context.Context, w *world) {
	navigate(t, ctx, "#/workloads")
	// The page refreshes itself; api's sidecar versions arrive with the status, written every 5s.
	got := waitRows(t, ctx, "#workloads", 30*time.Second, func(r [][]string) bool {
		return len(r) == 4 && strings.Contains(r[1][4], "versions")
	})
	// Rules by origin depend on the generator; the seeded user rule and the modes do not.
	var brief [][]string
	for _, r := range got {
		brief = append(brief, []string{r[0], r[1], r[2], r[3][strings.LastIndex(r[3], "/")+2:], r[4], r[5]})
	}
	want := [][]string{
		{"billing", "Deployment/ledger", "Learn", "0", "0 / 0", "0"},
		{"shop", "Deployment/api", "Monitor", "0", "0 / 1versions: v0.0.1-old ×1 (1 outdated: restart the pods to upgrade)" +
			"1 weakened: failing open, in a weaker mode, or its ruleset changed by another process in the pod", "0"},
		{"shop", "Deployment/db", "Protect", "0", "0 / 0" + w.pods["db"].Name + ": Monitor (weaker than the policy's Protect), config refused", "0"},
		{"shop", "Deployment/web", "Protect", "2", "0 / 0" + w.pods["web"].Name + ": Protect", "1"},
	}
	if diff := cmp.Diff(want, brief); diff != "" {
		t.Errorf("workloads table (namespace, workload, mode, user rules, in sync, last hour) (-want +got):\n%s", diff)
	}
	screenshot(t, ctx, "workloads")
	if err := chromedp.Do(ctx, chromedp.SetValue("#ns-filter", "billing"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('ns-filter').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatal(err)
	}
	waitRows(t, ctx, "#workloads", 5*time.Second, func(r [][]string) bool { return len(r) == 1 && r[0][1] == "Deployment/ledger" })
	if err := chromedp.Do(ctx, chromedp.SetValue("#ns-filter", "")); err != nil {
		t.Fatal(err)
	}
}

func navigate(t *testing.T, ctx context.Context, hash string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`location.hash = '`+hash+`'`)); err != nil {
		t.Fatal(err)
	}
}

func hasRow(rows [][]string, verdict, peer, port string) bool {
	for _, r := range rows {
		if r[1] == verdict && r[4] == peer && r[5] == port {
			return true
		}
	}
	return false
}

func checkLive(t *testing.T, ctx context.Context, w *world) {
	navigate(t, ctx, "#/live")
	// The deny reported before the page opened is replayed from policygen's buffer.
	waitRows(t, ctx, "#verdicts", 10*time.Second, func(r [][]string) bool { return hasRow(r, "deny", "shop/Deployment/db", "TCP 5432") })

	start := time.Now()
	w.report("api", policy.Protect, entry(policy.Deny, policy.Ingress, "192.0.2.7", 8080))
	rows := waitRows(t, ctx, "#verdicts", 2*time.Second, func(r [][]string) bool { return hasRow(r, "deny", "192.0.2.7", "TCP 8080") })
	t.Logf("a new deny reached the live view %v after its report was posted", time.Since(start).Round(time.Millisecond))
	if got := rows[0]; got[1] != "deny" || got[4] != "192.0.2.7" || got[6] != "default" || !strings.HasPrefix(got[2], "shop/api-") {
		t.Errorf("newest row is %q, want the new deny first (pod shop/api-..., rule default)", got)
	}

	// Pausing closes the stream; what arrives meanwhile is kept by policygen and shown on resume.
	if err := chromedp.Do(ctx, chromedp.Click("#pause")); err != nil {
		t.Fatal(err)
	}
	w.report("api", policy.Monitor, entry(policy.Audit, policy.Egress, "10.1.0.1", 443))
	if err := chromedp.Do(ctx, chromedp.Click("#pause")); err != nil {
		t.Fatal(err)
	}
	rows = waitRows(t, ctx, "#verdicts", 5*time.Second, func(r [][]string) bool { return hasRow(r, "audit", "shop/Deployment/web", "TCP 443") })
	if len(rows) != 3 {
		t.Errorf("after resuming: %d rows, want 3 (each verdict once): %q", len(rows), rows)
	}

	// A connection to an address the pod resolved shows the name beside the address (dst_name).
	named := entry(policy.Deny, policy.Egress, "203.0.113.7", 80)
	named.Name = "api.stripe.com"
	w.report("web", policy.Protect, named)
	waitRows(t, ctx, "#verdicts", 5*time.Second, func(r [][]string) bool { return hasRow(r, "deny", "203.0.113.7 (api.stripe.com)", "TCP 80") })
	screenshot(t, ctx, "live")
}

func checkReadOnlyPolicy(t *testing.T, ctx context.Context, w *world) {
	navigate(t, ctx, "#/policy/shop/deployment-web")
	user, err := chromedp.Run(ctx, chromedp.Poll[string](
		`document.querySelector('#rules-user li') && document.getElementById('netpol').textContent && document.querySelector('#rules-user li').textContent`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		t.Fatalf("policy page: %v", err)
	}
	if want := "Allow connections to Deployment api on TCP 8080 (web-to-api)."; user != want {
		t.Errorf("user rule in words: %q, want %q", user, want)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`({select: document.getElementById('mode-select').disabled,
		apply: document.getElementById('mode-apply').disabled, netpol: document.getElementById('netpol').textContent,
		manifest: document.querySelectorAll('#rules-manifest li').length,
		names: document.querySelectorAll('#rules-user li')[1].textContent, dns: document.getElementById('dns').textContent})`))
	if err != nil {
		t.Fatal(err)
	}
	if state["select"] != true || state["apply"] != true {
		t.Errorf("a viewer's mode controls: %v, want both disabled", state)
	}
	if np, _ := state["netpol"].(string); !strings.Contains(np, "kind: NetworkPolicy") || !strings.Contains(np, "port: 8080") ||
		!strings.Contains(np, "# not expressed: egress rule stripe left out") {
		t.Errorf("NetworkPolicy export:\n%s", np)
	}
	if want := "Allow connections to the name api.stripe.com or any name one label under stripe.com on TCP 443 (stripe)."; state["names"] != want {
		t.Errorf("rule by name in words: %q, want %q", state["names"], want)
	}
	if dns, _ := state["dns"].(string); !strings.HasPrefix(dns, "DNS: the pod may look up only names its egress rules name") {
		t.Errorf("restrictDNS in words: %q", dns)
	}
	screenshot(t, ctx, "policy")
	// The server refuses the viewer too, whatever the page allows.
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('api/policies/shop/deployment-web/mode', {method: 'POST',
		headers: {Authorization: 'Bearer ' + sessionStorage.getItem('podwall-token'), 'Content-Type': 'application/json'},
		body: '{"mode":"Learn"}'}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	if err != nil || code != 403 {
		t.Errorf("viewer's POST of a mode: %d %v, want 403", code, err)
	}
	var p v1.WorkloadPolicy
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "deployment-web"}, &p); err != nil || p.Spec.Mode != policy.Protect {
		t.Errorf("web's mode is %q (%v), want Protect unchanged", p.Spec.Mode, err)
	}
}

func checkOperator(t *testing.T, ctx context.Context, w *world) {
	if err := chromedp.Do(ctx, chromedp.Click("#signout")); err != nil {
		t.Fatal(err)
	}
	navigate(t, ctx, "#/policy/shop/deployment-web")
	signIn(t, ctx, w.operator)
	if err := chromedp.Do(ctx, chromedp.WaitEnabled("#mode-apply"), chromedp.SetValue("#mode-select", "Monitor"),
		chromedp.Click("#mode-apply")); err != nil {
		t.Fatalf("change mode: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		var p v1.WorkloadPolicy
		if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "deployment-web"}, &p); err != nil {
			return err
		}
		// The page's own fetch (with its Origin) passed the origin check, and the change names the operator.
		if by := p.Annotations[ui.ModeChangedByAnnotation]; p.Spec.Mode != policy.Monitor || by != "system:serviceaccount:ops:operator" {
			return fmt.Errorf("mode %s set by %q, want Monitor by the operator", p.Spec.Mode, by)
		}
		return nil
	})
}

// checkAcceptProposal: a Service selecting db (in Protect) shows as a proposal on db's page, and the
// operator's click on Accept writes its rule into the policy; the Service's removal takes it out again.
func checkAcceptProposal(t *testing.T, ctx context.Context, w *world) {
	svc := w.cluster.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-browser"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Protocol: "TCP", Port: 5433, TargetPort: intstr.FromInt32(5433)}}}})
	testutil.Await(t, "the proposal", 20*time.Second, func() error {
		if p := storedPolicy(t, w, "deployment-db"); len(p.Status.Proposals) != 1 {
			return fmt.Errorf("proposals %+v", p.Status.Proposals)
		}
		return nil
	})
	navigate(t, ctx, "#/policy/shop/deployment-db")
	// policygen's cache may see the proposal after the API server does: show the page again until it does.
	testutil.Eventually(t, 20*time.Second, func() error {
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`render().then(() => !!document.querySelector('#proposal-list li.proposal button:enabled'))`,
			chromedp.EvalAwaitPromise))
		if err == nil && !shown {
			err = fmt.Errorf("no proposal to accept on the page")
		}
		return err
	})
	text, err := chromedp.Run(ctx, chromedp.TextContent("#proposal-list li.proposal"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "Service shop/db-browser selects this workload") || !strings.Contains(text, "TCP 5433") {
		t.Errorf("proposal reads %q", text)
	}
	screenshot(t, ctx, "proposal")
	if err := chromedp.Do(ctx, chromedp.Click("#proposal-list li.proposal button")); err != nil {
		t.Fatal(err)
	}
	has := func(p *v1.WorkloadPolicy) bool {
		return slices.ContainsFunc(p.Spec.Ingress, func(r v1.Rule) bool { return r.Name == "m-svc-db-browser" })
	}
	testutil.Await(t, "the accepted rule", 20*time.Second, func() error {
		if p := storedPolicy(t, w, "deployment-db"); !has(p) || len(p.Status.Proposals) != 0 {
			return fmt.Errorf("ingress %+v proposals %+v", p.Spec.Ingress, p.Status.Proposals)
		}
		return nil
	})
	if err := w.c.Delete(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	testutil.Await(t, "the rule gone with its Service", 20*time.Second, func() error {
		if has(storedPolicy(t, w, "deployment-db")) {
			return fmt.Errorf("rule still there")
		}
		return nil
	})
}
