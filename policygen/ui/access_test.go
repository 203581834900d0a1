package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"podwall.io/podwall/policygen/ui"
	"podwall.io/podwall/sidecar/policy"
)

// TestAccess checks, without a browser, who may read and who may change what, and that the verdict
// stream resumes after the last event a client saw.
func TestAccess(t *testing.T) {
	w := newWorld(t)
	nobody := w.user(w.cluster.Cfg, "nobody", "get") // may get, not list: not enough to read the UI
	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"page without a token", "GET", "", "", http.StatusOK},
		{"data without a token", "GET", "api/workloads", "", http.StatusUnauthorized},
		{"a token the API server rejects", "GET", "api/workloads", "not-a-token", http.StatusUnauthorized},
		{"a user who may not list policies", "GET", "api/workloads", nobody, http.StatusForbidden},
		{"a viewer reads", "GET", "api/workloads", w.viewer, http.StatusOK},
		{"a viewer reads a policy", "GET", "api/policies/shop/deployment-web", w.viewer, http.StatusOK},
		{"a missing policy", "GET", "api/policies/shop/nothing", w.viewer, http.StatusNotFound},
		{"a viewer may not change a mode", "POST", "api/policies/shop/deployment-web/mode", w.viewer, http.StatusForbidden},
		{"an operator may", "POST", "api/policies/shop/deployment-web/mode", w.operator, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, w.url+tt.path, strings.NewReader(`{"mode":"Monitor"}`))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := w.https.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.want)
			}
		})
	}
	t.Run("a mode outside the enum", func(t *testing.T) {
		req, _ := http.NewRequest("POST", w.url+"api/policies/shop/deployment-web/mode", strings.NewReader(`{"mode":"Off"}`))
		req.Header.Set("Authorization", "Bearer "+w.operator)
		resp, err := w.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("mode Off: %s, want 400", resp.Status)
		}
	})
	t.Run("stream resumes after Last-Event-ID", func(t *testing.T) { checkResume(t, w) })
}

// checkResume reads two verdicts, reconnects with the first one's id, and gets only the second.
func checkResume(t *testing.T, w *world) {
	w.report("web", policy.Protect, entry("deny", policy.Egress, "10.1.0.3", 5432))
	w.report("web", policy.Protect, entry("deny", policy.Egress, "10.1.0.2", 9090))
	first := readVerdicts(t, w, "", 2)
	if first[0].Port != 5432 || first[1].Port != 9090 || first[1].Seq <= first[0].Seq {
		t.Fatalf("stream from the start: %+v", first)
	}
	again := readVerdicts(t, w, strconv.FormatUint(first[0].Seq, 10), 1)
	if again[0].Seq != first[1].Seq {
		t.Errorf("after Last-Event-ID %d: got seq %d, want %d", first[0].Seq, again[0].Seq, first[1].Seq)
	}
	if again[0].Peer != "shop/Deployment/api" || again[0].Rule != "default" || again[0].Pod != w.pods["web"].Name {
		t.Errorf("verdict %+v: want peer shop/Deployment/api, rule default, pod %s", again[0], w.pods["web"].Name)
	}
}

// readVerdicts opens the stream (resuming after lastID unless empty) and reads n verdicts.
func readVerdicts(t *testing.T, w *world, lastID string, n int) []ui.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", w.url+"api/verdicts", nil)
	req.Header.Set("Authorization", "Bearer "+w.viewer)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := w.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %s %s", resp.Status, ct)
	}
	var out []ui.Verdict
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var v ui.Verdict
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			out = append(out, v)
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d verdicts, want %d: %v", len(out), n, sc.Err())
	}
	return out
}
