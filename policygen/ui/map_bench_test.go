//go:build bench

package ui_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"podwall.io/podwall/internal/testutil"
)

// TestBenchUI measures the UI with the map's world of 30 workloads in 5 namespaces (make bench-ui):
// the JavaScript the page loads against the UI's own scripts alone, and the service map's time from
// asking for the graph to a laid-out, decluttered drawing against the SVG circle the map replaced
// (testdata/svggraph.js) drawing the same graph, each the median of rounds in one browser.
func TestBenchUI(t *testing.T) {
	w := newWorld(t)
	w.seedMap()

	all, own := bundleKiB(t, w)
	testutil.Bench("ui_bundle_kib", all, "KiB", own)

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(w.url)); err != nil {
		t.Fatal(err)
	}
	signIn(t, ctx, w.viewer)
	svg, err := os.ReadFile("testdata/svggraph.js")
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](string(svg))); err != nil {
		t.Fatalf("load the SVG baseline: %v", err)
	}
	const rounds = 7
	var mapMS, svgMS []float64
	for range rounds {
		waitMap(t, ctx, `location.hash = '#/workloads'; location.hash = '#/graph'`)
		ms, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('map').dataset.renderMs`))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseFloat(ms, 64)
		mapMS = append(mapMS, v)
		base, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`svgGraphBaseline()`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("SVG baseline: %v", err)
		}
		svgMS = append(svgMS, base)
	}
	m, b := testutil.Median(mapMS), testutil.Median(svgMS)
	t.Logf("map %v ms, SVG circle %v ms", mapMS, svgMS)
	testutil.Bench("ui_map_render_ms", m, "ms", b)
}

// bundleKiB sums the scripts index.html loads, all of them and the UI's own (not under vendor/).
func bundleKiB(t *testing.T, w *world) (all, own float64) {
	get := func(path string) []byte {
		resp, err := w.https.Get(w.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v", path, resp.Status, err)
		}
		return body
	}
	srcs := regexp.MustCompile(`<script src="([^"]+)"`).FindAllStringSubmatch(string(get("")), -1)
	if len(srcs) == 0 {
		t.Fatal("index.html loads no script")
	}
	for _, m := range srcs {
		kib := float64(len(get(m[1]))) / 1024
		all += kib
		if !strings.HasPrefix(m[1], "vendor/") {
			own += kib
		}
		t.Logf("%s: %.1f KiB", m[1], kib)
	}
	return all, own
}
