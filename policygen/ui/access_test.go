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

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/policygen/ui"
)

// testAccess checks, without a browser, who may read and who may change what, and that the verdict
// stream resumes after the last event a client saw.
func testAccess(t *testing.T, w *world) {
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

// checkResume reads two new verdicts, reconnects with the first one's id, and gets only the second.
func checkResume(t *testing.T, w *world) {
	w.report("web", policy.Protect, entry(policy.Deny, policy.Egress, "10.1.0.3", 6001))
	w.report("web", policy.Protect, entry(policy.Deny, policy.Egress, "10.1.0.2", 6002))
	seen := map[uint16]ui.Event{}
	readVerdicts(t, w, "", func(v ui.Event) bool {
		seen[v.Port] = v
		return seen[6001].Seq != 0 && seen[6002].Seq != 0
	})
	if seen[6002].Seq <= seen[6001].Seq {
		t.Fatalf("verdicts out of order: %+v", seen)
	}
	var again []ui.Event
	readVerdicts(t, w, strconv.FormatUint(seen[6001].Seq, 10), func(v ui.Event) bool {
		again = append(again, v)
		return true
	})
	if again[0].Seq != seen[6002].Seq {
		t.Errorf("after Last-Event-ID %d: got seq %d, want %d", seen[6001].Seq, again[0].Seq, seen[6002].Seq)
	}
	if v := again[0]; v.Peer != "shop/Deployment/api" || v.Rule != "default" || v.Pod != w.pods["web"].Name || v.Verdict != "deny" {
		t.Errorf("verdict %+v: want a deny of pod %s to shop/Deployment/api, rule default", v, w.pods["web"].Name)
	}
}

// readVerdicts opens the stream (resuming after lastID unless empty) and reads verdicts until done
// says so.
func readVerdicts(t *testing.T, w *world, lastID string, done func(ui.Event) bool) {
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
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var v ui.Event
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			if done(v) {
				return
			}
		}
	}
	t.Fatalf("stream ended before the verdicts looked for: %v", sc.Err())
}
