package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/ui"
)

// flowsNet holds the peers of the verdicts checkFlows reports, so that its views leave out every
// other test's verdicts: each view starts from peer=flowsNet.
const flowsNet = "198.51.100.0/24"

// flowPeers are the Peer cells of the Flows table's lines, newest first.
const flowPeersJS = `[...document.querySelectorAll('#verdicts tr.flow')].map(r => r.cells[4].textContent)`

// waitFlows polls the Flows table until its peers are want, in any order, and returns them newest first.
func waitFlows(t *testing.T, ctx context.Context, what string, want ...string) []string {
	t.Helper()
	var got []string
	testutil.Await(t, what, 5*time.Second, func() error {
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[[]string](flowPeersJS)); err != nil {
			return err
		}
		if !cmp.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			return fmt.Errorf("peers shown %q, want %q", got, want)
		}
		return nil
	})
	return got
}

// setFilter sets one filter field and fires the event a person's change would.
func setFilter(t *testing.T, ctx context.Context, id, value string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %q;
		e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input', {bubbles: true})); })()`, id, value)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
		t.Fatal(err)
	}
}

func hash(t *testing.T, ctx context.Context) string {
	t.Helper()
	h, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkFlows: each filter narrows the lines to the verdicts it names, in the address too; a line
// expands to its JSON; the export holds exactly the lines shown. It reports verdicts, so it runs
// after the map's check, whose edges and counts they would change.
func checkFlows(t *testing.T, ctx context.Context, w *world) {
	named := func(e policy.ReportEntry, name string) policy.ReportEntry { e.Name = name; return e }
	const a, b, c, d = "198.51.100.10 (flows-a.example.com)", "198.51.100.13 (flows-b.example.org)", "198.51.100.12", "198.51.100.14"
	w.report("web", policy.Protect, named(entry(policy.Deny, policy.Egress, "198.51.100.10", 7001), "flows-a.example.com"))
	w.report("api", policy.Monitor, named(entry(policy.Audit, policy.Egress, "198.51.100.13", 7001), "flows-b.example.org"))
	w.report("ledger", policy.Learn, entry(policy.Audit, policy.Ingress, "198.51.100.12", 7003))
	w.report("web", policy.Protect, entry(policy.Deny, policy.Egress, "198.51.100.14", 7004))

	// A shared address opens the view it names; #/live is the page's old name.
	navigate(t, ctx, "#/live?peer="+flowsNet)
	waitFlows(t, ctx, "the peer CIDR from the address", a, b, c, d)

	steps := []struct {
		id, value string
		want      []string
	}{
		{"f-namespace", "billing", []string{c}},
		{"f-namespace", "", []string{a, b, c, d}},
		{"f-workload", "Deployment/web", []string{a, d}},
		{"f-workload", "", []string{a, b, c, d}},
		{"f-verdict", "audit", []string{b, c}},
		{"f-verdict", "", []string{a, b, c, d}},
		{"f-port", "7001", []string{a, b}},
		{"f-port", "", []string{a, b, c, d}},
		{"f-q", "FLOWS-A.example", []string{a}}, // free text finds the DNS name
		{"f-q", "ledger ingress", []string{c}},
		{"f-q", "", []string{a, b, c, d}},
		{"f-peer", "flows-b", []string{b}}, // a peer by its DNS name
		{"f-peer", flowsNet, []string{a, b, c, d}},
	}
	for _, s := range steps {
		setFilter(t, ctx, s.id, s.value)
		waitFlows(t, ctx, s.id+"="+s.value, s.want...)
		h := hash(t, ctx)
		q, err := url.ParseQuery(h[strings.Index(h, "?")+1:])
		if err != nil || !strings.HasPrefix(h, "#/flows?") || q.Get(strings.TrimPrefix(s.id, "f-")) != s.value {
			t.Errorf("after %s=%q the address is %q (%v)", s.id, s.value, h, err)
		}
	}

	// Filters combine, and the address with them opens the same view in a new page.
	setFilter(t, ctx, "f-verdict", "deny")
	waitFlows(t, ctx, "deny in the CIDR", a, d)
	shared := hash(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(w.url+shared)); err != nil {
		t.Fatal(err)
	}
	waitFlows(t, ctx, "the shared view", a, d)
	if v, err := chromedp.Run(ctx, chromedp.Value("#f-verdict")); err != nil || v != "deny" {
		t.Errorf("verdict filter of the shared view: %q %v", v, err)
	}

	// Paused, the view takes nothing; resumed, it shows what matched meanwhile, once.
	if err := chromedp.Do(ctx, chromedp.Click("#pause")); err != nil {
		t.Fatal(err)
	}
	w.report("web", policy.Protect, entry(policy.Deny, policy.Egress, "198.51.100.15", 7005))
	w.report("web", policy.Protect, entry(policy.Audit, policy.Egress, "198.51.100.16", 7005)) // not a deny
	if got, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](flowPeersJS)); len(got) != 2 {
		t.Errorf("paused view changed: %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Click("#pause")); err != nil {
		t.Fatal(err)
	}
	waitFlows(t, ctx, "the deny reported while paused", a, d, "198.51.100.15")

	checkExpand(t, ctx)
	checkExport(t, ctx)
	screenshot(t, ctx, "flows")
	checkFilterRefused(t, w)
}

// checkFilterRefused: a filter policygen cannot read is refused with what it wants, not ignored
// (which would show everything as if it had matched).
func checkFilterRefused(t *testing.T, w *world) {
	req, _ := http.NewRequest("GET", w.url+"api/verdicts?port=http", nil)
	req.Header.Set("Authorization", "Bearer "+w.viewer)
	resp, err := w.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "port: want a number from 1 to 65535") {
		t.Errorf("verdicts?port=http: %s %s, want 400 saying what port wants", resp.Status, body)
	}
}

// checkExpand: a click on a line shows the event as policygen sent it; another folds it.
func checkExpand(t *testing.T, ctx context.Context) {
	const line = `[...document.querySelectorAll('#verdicts tr.flow')].find(r => r.cells[4].textContent.startsWith('198.51.100.10 '))`
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](line+`.click()`)); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](line+`.nextElementSibling.querySelector('pre.json').textContent`))
	if err != nil {
		t.Fatalf("expanded line: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(text), &got); err != nil {
		t.Fatalf("expanded line is not JSON: %v\n%s", err, text)
	}
	for k, want := range map[string]any{"namespace": "shop", "workload": "Deployment/web", "direction": "egress", "peerAddr": "198.51.100.10",
		"name": "flows-a.example.com", "protocol": "TCP", "port": 7001.0, "verdict": "deny", "rule": "default", "mode": "Protect"} {
		if got[k] != want {
			t.Errorf("expanded line's %s is %v, want %v (%s)", k, got[k], want, text)
		}
	}
	if _, ok := got["seq"]; !ok {
		t.Errorf("expanded line has no seq: %s", text)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { const r = `+line+`; r.click();
		return r.getAttribute('aria-expanded') + ' ' + document.querySelectorAll('#verdicts tr.detail').length; })()`))
	if err != nil || state != "false 0" {
		t.Errorf("after a second click: aria-expanded, detail rows = %q %v, want false 0", state, err)
	}
}

// checkExport: the download holds exactly the lines shown, oldest first, each as received.
func checkExport(t *testing.T, ctx context.Context) {
	dir := t.TempDir()
	_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior,
		cdpbrowser.SetDownloadBehaviorParams{Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#verdicts tr.flow')].map(r => r.dataset.key).reverse()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click("#export")); err != nil {
		t.Fatal(err)
	}
	var data []byte
	testutil.Await(t, "the exported file", 10*time.Second, func() error {
		files, _ := filepath.Glob(filepath.Join(dir, "podwall-flows-*.jsonl"))
		if len(files) != 1 {
			return fmt.Errorf("downloads: %v", files)
		}
		data, err = os.ReadFile(files[0])
		return err
	})
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var got []string
	for _, l := range lines {
		var v ui.Event
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Verdict != "deny" || v.Replica != "r0" {
			t.Errorf("exported line %q: %v, want a deny as JSON, from replica r0", l, err)
		}
		got = append(got, fmt.Sprintf("%s-%d", v.Replica, v.Seq))
	}
	if diff := cmp.Diff(keys, got); diff != "" {
		t.Errorf("exported lines (replica-seq), oldest first (-shown +exported):\n%s", diff)
	}
}

// checkLooks: the dark palette applies when the system asks for it, verdict colours keep their
// contrast in both themes, and the keyboard alone reaches each page and opens a line.
func checkLooks(t *testing.T, ctx context.Context) {
	navigate(t, ctx, "#/flows?peer="+flowsNet)
	waitFlows(t, ctx, "the flows", "198.51.100.10 (flows-a.example.com)", "198.51.100.13 (flows-b.example.org)", "198.51.100.12",
		"198.51.100.14", "198.51.100.15", "198.51.100.16")
	for _, theme := range []struct{ scheme, bg string }{{"dark", "rgb(15, 19, 27)"}, {"light", "rgb(246, 247, 249)"}} {
		setScheme(t, ctx, theme.scheme)
		got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](contrastJS))
		if err != nil {
			t.Fatal(err)
		}
		if got["bg"] != theme.bg {
			t.Errorf("%s: page background %v, want %s", theme.scheme, got["bg"], theme.bg)
		}
		for _, k := range []string{"deny", "audit", "muted", "link"} {
			if r, _ := got[k].(float64); r < 4.5 {
				t.Errorf("%s: contrast of %s text on its surface is %.2f:1, want at least 4.5:1 (%v)", theme.scheme, k, r, got)
			}
		}
	}
	checkKeyboard(t, ctx)
}

func setScheme(t *testing.T, ctx context.Context, scheme string) {
	t.Helper()
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
	if err != nil {
		t.Fatal(err)
	}
}

// contrastJS computes WCAG contrast ratios of coloured text against the table it sits on.
const contrastJS = `(() => {
	const rgb = (s) => s.match(/[\d.]+/g).slice(0, 3).map(Number);
	const lum = (c) => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
		return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
	const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
	const surface = getComputedStyle(document.getElementById('verdicts')).backgroundColor;
	const color = (sel) => getComputedStyle(document.querySelector(sel)).color;
	return {bg: getComputedStyle(document.body).backgroundColor,
		deny: ratio(color('#verdicts td.verdict-deny'), surface), audit: ratio(color('#verdicts td.verdict-audit'), surface),
		muted: ratio(color('#verdicts th'), surface), link: ratio(getComputedStyle(document.querySelector('a.skip')).color, surface)};
})()`

// press sends keys to whatever has the focus, as a keyboard would.
func press(t *testing.T, ctx context.Context, keys string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.KeyEvent(keys)); err != nil {
		t.Fatal(err)
	}
}

// tabTo presses Tab until the focus is on an element matching sel, checks the focus shows, and
// returns how many presses it took.
func tabTo(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	for n := 1; n <= 40; n++ {
		press(t, ctx, kb.Tab)
		st, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({match: String(document.activeElement.matches(`+
			fmt.Sprintf("%q", sel)+`)), outline: getComputedStyle(document.activeElement).outlineStyle})`))
		if err != nil {
			t.Fatal(err)
		}
		if st["match"] == "true" {
			if st["outline"] == "none" {
				t.Errorf("focus on %s does not show (outline-style none)", sel)
			}
			return n
		}
	}
	t.Fatalf("40 Tabs did not reach %s", sel)
	return 0
}

func waitHash(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	testutil.Await(t, "address "+prefix, 5*time.Second, func() error {
		if h := hash(t, ctx); !strings.HasPrefix(h, prefix) {
			return fmt.Errorf("address is %q", h)
		}
		return nil
	})
}

// checkKeyboard: from the top of the page, Tab and Enter alone reach each page (the skip link
// first) and open a line, Space folds it, the arrows move between lines; g f / g m / g w jump
// between pages.
func checkKeyboard(t *testing.T, ctx context.Context) {
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	if n := tabTo(t, ctx, "a.skip"); n != 1 {
		t.Errorf("the skip link took %d Tabs, want it first", n)
	}
	for _, p := range []struct{ nav, hash string }{{"#nav-workloads", "#/workloads"}, {"#nav-graph", "#/graph"}, {"#nav-flows", "#/flows"}} {
		tabTo(t, ctx, p.nav)
		press(t, ctx, kb.Enter)
		waitHash(t, ctx, p.hash)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('#verdicts tr.flow').length >= 6`,
		chromedp.WithPollingTimeout(5*time.Second))); err != nil {
		t.Fatalf("the flows, after the keyboard's visit: %v", err)
	}
	tabTo(t, ctx, "#verdicts tr.flow")
	press(t, ctx, kb.ArrowDown)
	press(t, ctx, kb.Enter)
	const state = `(() => { const r = document.activeElement; return [r.matches('#verdicts tr.flow:nth-child(2)'),
		r.getAttribute('aria-expanded'), !!(r.nextElementSibling && r.nextElementSibling.querySelector('pre.json'))].join(' '); })()`
	if got, err := chromedp.Run(ctx, chromedp.Evaluate[string](state)); err != nil || got != "true true true" {
		t.Errorf("ArrowDown then Enter: second line focused, expanded, JSON shown = %q %v, want true true true", got, err)
	}
	press(t, ctx, " ")
	if got, err := chromedp.Run(ctx, chromedp.Evaluate[string](state)); err != nil || got != "true false false" {
		t.Errorf("then Space: %q %v, want the line folded (true false false)", got, err)
	}
	// The lines are one Tab stop: Tab leaves the table.
	press(t, ctx, kb.Tab)
	if in, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.activeElement.closest('#verdicts')`)); err != nil || in {
		t.Errorf("Tab from a line stayed in the table (%v)", err)
	}
	for _, p := range []struct{ keys, hash string }{{"gm", "#/graph"}, {"gw", "#/workloads"}, {"gf", "#/flows"}} {
		press(t, ctx, p.keys)
		waitHash(t, ctx, p.hash)
	}
}

// takeScreenshots saves each page in the light and the dark theme as ui-<page>-<theme>.png, the
// pictures the README shows (make ui-screenshots copies them to docs/images).
func takeScreenshots(t *testing.T, ctx context.Context) {
	// show opens a page and waits until it shows what ready says.
	show := func(hash, ready string) func() {
		return func() {
			navigate(t, ctx, hash)
			if _, err := chromedp.Run(ctx, chromedp.Poll[bool](ready, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
				t.Fatalf("page %s: %v", hash, err)
			}
		}
	}
	pages := []struct {
		name string
		open func()
	}{
		{"workloads", show("#/workloads", `document.querySelectorAll('#workloads tbody tr').length > 0`)},
		{"policy", show("#/policy/shop/deployment-web", `document.getElementById('netpol').textContent !== ''`)},
		// The flows with their newest line open, to show what a line holds.
		{"flows", show("#/flows", `(() => { const r = document.querySelector('#verdicts tr.flow');
			if (r && r.getAttribute('aria-expanded') !== 'true') r.click(); return !!document.querySelector('#verdicts tr.detail'); })()`)},
		// The map takes the theme's colours when it draws: wait for this drawing.
		{"map", func() { waitMap(t, ctx, `location.hash = '#/graph'`) }},
	}
	for _, scheme := range []string{"light", "dark"} {
		setScheme(t, ctx, scheme)
		for _, p := range pages {
			p.open()
			screenshot(t, ctx, "ui-"+p.name+"-"+scheme)
		}
	}
	setScheme(t, ctx, "light")
}
