package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
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
		{"the map of a day", "GET", "api/graph?window=24h", w.viewer, http.StatusOK},
		{"the map of a window it does not offer", "GET", "api/graph?window=2d", w.viewer, http.StatusBadRequest},
		{"the map needs the right to list policies", "GET", "api/graph", nobody, http.StatusForbidden},
		// A query is read only once the caller may read: a bad value from anyone else learns nothing.
		{"the map's window without a token", "GET", "api/graph?window=2d", "", http.StatusUnauthorized},
		{"the map's window from a user who may not list", "GET", "api/graph?window=2d", nobody, http.StatusForbidden},
		{"the flows without a token", "GET", "api/verdicts?verdict=allow", "", http.StatusUnauthorized},
		{"the flows need the right to list policies", "GET", "api/verdicts?port=http", nobody, http.StatusForbidden},
		{"the flows by a verdict they do not offer", "GET", "api/verdicts?verdict=allow", w.viewer, http.StatusBadRequest},
		{"the flows by a port that is none", "GET", "api/verdicts?port=65536", w.viewer, http.StatusBadRequest},
		{"a viewer may not change a mode", "POST", "api/policies/shop/deployment-web/mode", w.viewer, http.StatusForbidden},
		{"an operator may", "POST", "api/policies/shop/deployment-web/mode", w.operator, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, w.url+tt.path, strings.NewReader(`{"mode":"Monitor"}`))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			if tt.method == "POST" {
				req.Header.Set("Content-Type", "application/json")
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
		req.Header.Set("Content-Type", "application/json")
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
	t.Run("accept", func(t *testing.T) { testAccept(t, w) })
	t.Run("writes", func(t *testing.T) { testWrites(t, w) })
	t.Run("explain", func(t *testing.T) { testExplain(t, w) })
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

// testWrites attacks the mode change as another site's page would through a browser that carries
// the operator's credentials (a proxy in front adds the token), and checks what the API server
// stored: refused requests leave the mode alone, accepted ones name the operator.
func testWrites(t *testing.T, w *world) {
	const path = "api/policies/shop/deployment-db/mode"
	self := strings.TrimSuffix(w.url, "/ui/")
	operator := "system:serviceaccount:ops:operator"
	tests := []struct {
		name, contentType, body string
		headers                 map[string]string
		want                    int
		wantError               string
	}{
		{"a text/plain body, as a cross-site form would send", "text/plain", `{"mode":"Learn"}`, nil,
			http.StatusUnsupportedMediaType, "application/json"},
		{"an unknown field", "application/json", `{"mode":"Learn","force":true}`, nil,
			http.StatusBadRequest, `unknown field "force"`},
		{"another site's origin", "application/json", `{"mode":"Learn"}`, map[string]string{"Origin": "https://evil.example"},
			http.StatusForbidden, "evil.example"},
		{"this host over plain http", "application/json", `{"mode":"Learn"}`,
			map[string]string{"Origin": "http" + strings.TrimPrefix(self, "https")}, http.StatusForbidden, "origin"},
		{"a cross-site fetch without Origin", "application/json", `{"mode":"Learn"}`,
			map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, "cross-site"},
		{"a same-site fetch from a sibling host", "application/json", `{"mode":"Learn"}`,
			map[string]string{"Sec-Fetch-Site": "same-site", "Origin": self}, http.StatusForbidden, "same-site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := post(t, w, path, w.operator, tt.contentType, tt.body, tt.headers)
			if code != tt.want || !strings.Contains(msg, tt.wantError) {
				t.Errorf("got %d %q, want %d naming %q", code, msg, tt.want, tt.wantError)
			}
			if p := storedPolicy(t, w, "deployment-db"); p.Spec.Mode != policy.Protect {
				t.Errorf("stored mode %s after a refused request, want Protect", p.Spec.Mode)
			}
		})
	}
	allowed := []struct {
		name    string
		headers map[string]string
		mode    policy.Mode
	}{
		{"the UI's own page", map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}, policy.Monitor},
		{"a client that is no browser", nil, policy.Learn},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Add(-time.Second).Truncate(time.Second)
			body := `{"mode":"` + string(tt.mode) + `"}`
			if code, msg := post(t, w, path, w.operator, "application/json; charset=utf-8", body, tt.headers); code != http.StatusOK {
				t.Fatalf("got %d %q, want 200", code, msg)
			}
			p := storedPolicy(t, w, "deployment-db")
			if p.Spec.Mode != tt.mode || p.Annotations[ui.ModeChangedByAnnotation] != operator {
				t.Errorf("stored mode %s by %q, want %s by %s", p.Spec.Mode, p.Annotations[ui.ModeChangedByAnnotation], tt.mode, operator)
			}
			if at, err := time.Parse(time.RFC3339, p.Annotations[ui.ModeChangedAtAnnotation]); err != nil || at.Before(before) {
				t.Errorf("%s = %q, want a time since %s", ui.ModeChangedAtAnnotation, p.Annotations[ui.ModeChangedAtAnnotation], before)
			}
			if owners := modeOwners(t, p); !slices.Equal(owners, []string{ui.UIFieldManager}) {
				t.Errorf("spec.mode managed by %q, want %q alone", owners, ui.UIFieldManager)
			}
		})
	}
}

// post posts body to a UI write endpoint as the token's user and returns the status and error message.
func post(t *testing.T, w *world, path, token, contentType, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", w.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := w.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("answer to %s: %v", req.URL, err)
	}
	return resp.StatusCode, answer.Error
}

// storedPolicy reads a shop WorkloadPolicy from the API server, not from any cache.
func storedPolicy(t *testing.T, w *world, name string) *v1.WorkloadPolicy {
	t.Helper()
	var p v1.WorkloadPolicy
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// modeOwners are the field managers managedFields say own spec.mode.
func modeOwners(t *testing.T, p *v1.WorkloadPolicy) []string {
	var owners []string
	for _, f := range p.ManagedFields {
		var fields struct {
			Spec map[string]any `json:"f:spec"`
		}
		if f.FieldsV1 == nil || f.Subresource != "" {
			continue
		}
		if err := json.Unmarshal(f.FieldsV1.GetRawBytes(), &fields); err != nil {
			t.Fatalf("managedFields of %s: %v", f.Manager, err)
		}
		if _, ok := fields.Spec["f:mode"]; ok {
			owners = append(owners, f.Manager)
		}
	}
	return owners
}

// testExplain asks how web's sidecar would judge connections: the user rule web-to-api allows api's
// port 8080; another port falls to the default, a deny in Protect, which Monitor only audits (the
// modes asked for: testAccess's operator has changed web's).
func testExplain(t *testing.T, w *world) {
	for _, tt := range []struct {
		query, verdict, rule string
	}{
		{"dest=10.1.0.2&port=8080", "allow", "web-to-api"},
		{"dest=10.1.0.2&port=9999&mode=Protect", "deny", "default"},
		{"dest=10.1.0.2&port=9999&mode=Monitor", "audit", "default"},
	} {
		var ex ui.Explanation
		if err := getJSON(w, "api/explain?namespace=shop&pod="+w.pods["web"].Name+"&"+tt.query, w.viewer, &ex); err != nil {
			t.Fatalf("%s: %v", tt.query, err)
		}
		if ex.Verdict != tt.verdict || !strings.Contains(ex.Rule, tt.rule) || ex.Workload != "Deployment/web" || ex.Policy != "deployment-web" {
			t.Errorf("%s: %+v, want %s by rule %s of Deployment/web", tt.query, ex, tt.verdict, tt.rule)
		}
	}
	for query, want := range map[string]int{
		"namespace=shop&pod=nothing&dest=10.1.0.2&port=80":                                  http.StatusNotFound,
		"namespace=shop&pod=" + w.pods["web"].Name + "&dest=10.1.0.2":                       http.StatusBadRequest,
		"namespace=shop&pod=" + w.pods["web"].Name + "&dest=10.1.0.2&port=80&protocol=icmp": http.StatusBadRequest,
	} {
		req, _ := http.NewRequest("GET", w.url+"api/explain?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+w.viewer)
		resp, err := w.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", query, resp.Status, want)
		}
	}
}
