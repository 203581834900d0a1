package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// labelBox is one label drawn on the map, in page pixels relative to the map's container.
type labelBox struct {
	ID, Label      string
	X1, Y1, X2, Y2 float64
}

// mapLabelsJS returns the container's size and the rendered box of every label the map draws, read
// from cytoscape's own geometry (the map is a canvas: there are no elements to measure).
const mapLabelsJS = `(() => {
	const cy = window.podwallMap, c = cy.container();
	const boxes = [];
	cy.elements(':visible').forEach((e) => {
		const label = e.pstyle('label').strValue;
		if (!label) return;
		const b = e.renderedBoundingBox({includeNodes: false, includeEdges: false, includeLabels: true, includeOverlays: false});
		boxes.push({ID: e.id(), Label: label, X1: b.x1, Y1: b.y1, X2: b.x2, Y2: b.y2});
	});
	return {width: c.clientWidth, height: c.clientHeight, boxes, edges: cy.edges().length,
		unlabelled: cy.edges('.unlabelled').length};
})()`

type mapLabels struct {
	Width, Height     float64
	Boxes             []labelBox
	Edges, Unlabelled int
}

// waitMap waits for the map to be drawn (map.js sets data-render-ms when its layout is done) after
// clearing the mark of the previous drawing.
func waitMap(t *testing.T, ctx context.Context, change string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`delete document.getElementById('map').dataset.renderMs; `+change)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById('map').dataset.renderMs`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the map after %q: %v", change, err)
	}
}

// checkMap: the service map of 30 workloads in 5 namespaces, its layout (no label overlapping
// another or leaving the view), the path from an edge to its verdicts and rule, a node's mode, the
// filters and the time window.
func checkMap(t *testing.T, ctx context.Context, w *world) {
	resp, err := w.https.Get(w.url + "vendor/cytoscape.min.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET vendor/cytoscape.min.js: %s: the map's library was not built into this binary; run make ui-assets (make test and make test-ui do)", resp.Status)
	}
	w.seedMap()
	waitMap(t, ctx, `location.hash = '#/graph'`)
	screenshot(t, ctx, "map")

	summary, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`(() => {
		const cy = window.podwallMap;
		const parents = {};
		cy.nodes('[kind = "workload"]').forEach((n) => { parents[n.id()] = n.data('parent'); });
		const verdicts = {};
		cy.edges().forEach((e) => { verdicts[e.data('verdict')] = (verdicts[e.data('verdict')] || 0) + 1; });
		return {parents, verdicts, groups: cy.nodes('[kind = "group"]').map((n) => n.id()).sort(),
			outside: cy.nodes('[kind = "outside"]').map((n) => n.id()).sort()};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	parents, _ := summary["parents"].(map[string]any)
	for _, n := range mapNamespaces {
		for _, name := range n.names {
			if id := n.ns + "/Deployment/" + name; parents[id] != "group:"+n.ns {
				t.Errorf("workload %s in group %v, want group:%s", id, parents[id], n.ns)
			}
		}
	}
	if len(parents) != 30 {
		t.Errorf("%d workload nodes, want 30", len(parents))
	}
	for _, g := range []string{"group:billing", "group:catalog", "group:identity", "group:outside", "group:payments", "group:shop"} {
		if !slices.Contains(anyStrings(summary["groups"]), g) {
			t.Errorf("groups %v, want %s", summary["groups"], g)
		}
	}
	// Outside peers: by the name the pod resolved, else by /24; the two gateway addresses are one node.
	for _, o := range []string{"198.51.100.0/24", "ldap.example.com"} {
		if !slices.Contains(anyStrings(summary["outside"]), o) {
			t.Errorf("outside peers %v, want %s", summary["outside"], o)
		}
	}
	verdicts, _ := summary["verdicts"].(map[string]any)
	for _, v := range []string{"allowed", "learned", "audited", "denied"} {
		if verdicts[v] == nil {
			t.Errorf("edges by verdict %v, want some %s", verdicts, v)
		}
	}

	checkMapLabels(t, ctx, "all of it")
	checkEdgeToRule(t, ctx)
	checkNodeDetails(t, ctx)
	checkMapFilters(t, ctx)
}

// checkMapLabels asserts that no two drawn labels overlap and that each lies inside the map's view.
func checkMapLabels(t *testing.T, ctx context.Context, what string) mapLabels {
	t.Helper()
	l, err := chromedp.Run(ctx, chromedp.Evaluate[mapLabels](mapLabelsJS))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Boxes) == 0 {
		t.Fatalf("map of %s: no label drawn", what)
	}
	for i, a := range l.Boxes {
		if a.X1 < 0 || a.Y1 < 0 || a.X2 > l.Width || a.Y2 > l.Height {
			t.Errorf("map of %s: label %q (%s) at [%.0f,%.0f]-[%.0f,%.0f] is clipped by the %.0fx%.0f view", what, a.Label, a.ID, a.X1, a.Y1, a.X2, a.Y2, l.Width, l.Height)
		}
		for _, b := range l.Boxes[i+1:] {
			if a.X1 < b.X2 && b.X1 < a.X2 && a.Y1 < b.Y2 && b.Y1 < a.Y2 {
				t.Errorf("map of %s: labels %q (%s) and %q (%s) overlap", what, a.Label, a.ID, b.Label, b.ID)
			}
		}
	}
	t.Logf("map of %s: %d labels drawn apart in %.0fx%.0f; %d of %d edge labels left to the details panel", what, len(l.Boxes), l.Width, l.Height, l.Unlabelled, l.Edges)
	return l
}

func anyStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// clickElement clicks a map element with the mouse, as a person would: a node at its middle; an edge
// at the point of its drawn path (its curve's midpoint, or along the line between its ends) around
// which cytoscape's renderer finds it for a tap the most pixels every way, so that another edge or
// label passing close by does not take the click. The canvas starts inside the map's
// border, and the details panel lies over the map's right side: points under it are not clicked.
func clickElement(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	pos, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](fmt.Sprintf(`(() => {
		const cy = window.podwallMap, e = cy.getElementById(%q), c = cy.container(), r = c.getBoundingClientRect();
		const z = cy.zoom(), pan = cy.pan(), left = r.left + c.clientLeft, top = r.top + c.clientTop;
		const d = document.getElementById('map-details'), dr = d.hidden ? null : d.getBoundingClientRect();
		const onScreen = (m) => ({x: left + m.x * z + pan.x, y: top + m.y * z + pan.y});
		// clearance is how many pixels every way from m the tap still finds e (-1: not even at m).
		const clearance = (m) => {
			const s = onScreen(m);
			if (dr && s.x >= dr.left - 8 && s.x <= dr.right + 8 && s.y >= dr.top - 8 && s.y <= dr.bottom + 8) return -1;
			for (let k = 0; k <= 5; k++) {
				for (const [dx, dy] of [[k, 0], [-k, 0], [0, k], [0, -k], [k, k], [-k, -k], [k, -k], [-k, k]]) {
					if (cy.renderer().findNearestElement(m.x + dx / z, m.y + dy / z, true, false) !== e) return k - 1;
				}
			}
			return 5;
		};
		if (e.isNode()) return onScreen(e.position());
		const a = e.sourceEndpoint(), b = e.targetEndpoint(), points = [e.midpoint()];
		for (let f = 0.1; f < 0.95; f += 0.05) points.push({x: a.x + f * (b.x - a.x), y: a.y + f * (b.y - a.y)});
		let best = null, most = -1;
		for (const m of points) {
			const c = clearance(m);
			if (c > most) [best, most] = [m, c];
		}
		return best && onScreen(best);
	})()`, id)))
	if err == nil && pos == nil {
		err = fmt.Errorf("other elements cover every point of it")
	}
	if err != nil {
		t.Fatalf("find %s on the map: %v", id, err)
	}
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(pos["x"], pos["y"])); err != nil {
		t.Fatal(err)
	}
}

// checkEdgeToRule: clicking web's denied edge to ledger shows its verdict lines and the rule that
// decided (the mode's default), and links to web's policy page.
func checkEdgeToRule(t *testing.T, ctx context.Context) {
	clickElement(t, ctx, "shop/Deployment/web>billing/Deployment/ledger>denied")
	details, err := chromedp.Run(ctx, chromedp.Poll[string](`!document.getElementById('map-details').hidden && document.getElementById('map-details').innerText`,
		chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		t.Fatalf("edge details: %v", err)
	}
	for _, want := range []string{"shop/Deployment/web → billing/Deployment/ledger", "denied: TCP 9090, 4 connections in the last 1h",
		"Decided by the mode's default.", "deny shop/web-", "egress billing/Deployment/ledger TCP 9090 rule default ×4", "Policy shop/deployment-web"} {
		if !strings.Contains(details, want) {
			t.Errorf("edge details say:\n%s\nwant %q", details, want)
		}
	}
	screenshot(t, ctx, "map-edge")
	if err := chromedp.Do(ctx, chromedp.Click("#map-details a.policy-link")); err != nil {
		t.Fatal(err)
	}
	// The page shown before may still be rendered: wait for web's title.
	title, err := chromedp.Run(ctx, chromedp.Poll[string](`location.hash === '#/policy/shop/deployment-web' &&
		document.getElementById('policy-title').textContent.startsWith('shop / Deployment/web') && document.getElementById('policy-title').textContent`,
		chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil || !strings.HasPrefix(title, "shop / Deployment/web") {
		t.Errorf("the edge's policy link led to %q (%v), want web's policy page", title, err)
	}
	waitMap(t, ctx, `location.hash = '#/graph'`)
}

// checkNodeDetails: clicking a workload shows its mode and its policy's rules.
func checkNodeDetails(t *testing.T, ctx context.Context) {
	clickElement(t, ctx, "shop/Deployment/api")
	details, err := chromedp.Run(ctx, chromedp.Poll[string](`!document.getElementById('map-details').hidden && document.getElementById('map-details').innerText`,
		chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		t.Fatalf("node details: %v", err)
	}
	for _, want := range []string{"shop/Deployment/api", "Mode: Monitor", "Sidecars in sync:", "Coverage since", "Protect would deny ",
		"Policy shop/deployment-api"} {
		if !strings.Contains(details, want) {
			t.Errorf("node details say:\n%s\nwant %q", details, want)
		}
	}
}

// checkMapFilters: each filter leaves only what it names, laid out again without overlaps; the
// window leaves out what is older.
func checkMapFilters(t *testing.T, ctx context.Context) {
	edgesJS := `window.podwallMap.edges().map((e) => [e.source().id(), e.target().id(), e.data('verdict'), e.data('label')])`
	set := func(id, value string) string {
		return fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change')); })()`, id, value)
	}
	edges := func() [][]string {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](edgesJS))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	waitMap(t, ctx, set("map-verdict", "denied"))
	got := edges()
	if len(got) == 0 || slices.ContainsFunc(got, func(e []string) bool { return e[2] != "denied" }) {
		t.Errorf("verdict filter denied: edges %q", got)
	}
	checkMapLabels(t, ctx, "denied edges")
	waitMap(t, ctx, set("map-verdict", ""))

	waitMap(t, ctx, set("map-ns", "catalog"))
	got = edges()
	if len(got) < 6 || slices.ContainsFunc(got, func(e []string) bool {
		return !strings.HasPrefix(e[0], "catalog/") && !strings.HasPrefix(e[1], "catalog/")
	}) {
		t.Errorf("namespace filter catalog: edges %q, want catalog's six and more", got)
	}
	checkMapLabels(t, ctx, "namespace catalog")
	screenshot(t, ctx, "map-namespace")
	waitMap(t, ctx, set("map-ns", ""))

	// The flow audit reported two hours ago is in the last 24 hours only.
	old := []string{"identity/Deployment/audit", "billing/Deployment/reports", "learned", "TCP 9999 ×1"}
	waitMap(t, ctx, set("map-workload", "identity/Deployment/audit"))
	for _, window := range []string{"5m", "1h", "24h"} {
		waitMap(t, ctx, set("map-window", window))
		got = edges()
		if len(got) == 0 || slices.ContainsFunc(got, func(e []string) bool { return e[0] != old[0] && e[1] != old[0] }) {
			t.Errorf("workload filter identity/audit, window %s: edges %q, want only its own", window, got)
		}
		if has := slices.ContainsFunc(got, func(e []string) bool { return slices.Equal(e, old) }); has != (window == "24h") {
			t.Errorf("window %s: edges %q; the flow of 2h ago %q shown: %v", window, got, old, has)
		}
	}
	waitMap(t, ctx, set("map-workload", ""))
	waitMap(t, ctx, set("map-window", "1h"))
}

// checkMapOffline opens the map in a new tab whose every request to anywhere but policygen fails:
// the page, its library and its data come from policygen alone, and the map renders.
func checkMapOffline(t *testing.T, ctx context.Context, w *world) {
	tab, cancel := chromedp.NewContext(ctx)
	defer cancel()
	u, err := url.Parse(w.url)
	if err != nil {
		t.Fatal(err)
	}
	origin := u.Scheme + "://" + u.Host + "/"
	var mu sync.Mutex
	var served, blocked []string
	events := chromedp.Events(tab, fetch.RequestPaused)
	if _, err := chromedp.Call(tab, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			mu.Lock()
			if strings.HasPrefix(ev.Request.URL, origin) {
				served = append(served, ev.Request.URL)
				_, err = chromedp.Call(tab, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			} else {
				blocked = append(blocked, ev.Request.URL)
				_, err = chromedp.Call(tab, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
			}
			mu.Unlock()
			if err != nil && tab.Err() == nil {
				t.Errorf("intercept %s: %v", ev.Request.URL, err)
			}
		}
	}()
	if err := chromedp.Do(tab, chromedp.Navigate(w.url+"#/graph")); err != nil {
		t.Fatal(err)
	}
	signIn(t, tab, w.viewer)
	if _, err := chromedp.Run(tab, chromedp.Poll[string](`document.getElementById('map').dataset.renderMs`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the map with only policygen reachable: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(blocked) > 0 {
		t.Errorf("the page asked for %q, outside policygen", blocked)
	}
	if !slices.ContainsFunc(served, func(s string) bool { return strings.HasSuffix(s, "/vendor/cytoscape.min.js") }) {
		t.Errorf("requests seen %q, want the map's library from policygen", served)
	}
}
