package pgclient

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"podwall.io/podwall/api/policy"
)

// emptySource has observed nothing.
type emptySource struct{}

func (emptySource) Drain() []policy.ReportEntry  { return nil }
func (emptySource) Restore([]policy.ReportEntry) {}
func (emptySource) Dropped() uint64              { return 0 }

// TestReportLoopSendsTheConfiguration: a sidecar's configuration goes out at once at start, and again
// after each change, in reports without entries.
func TestReportLoopSendsTheConfiguration(t *testing.T) {
	got := make(chan policy.Report, 16)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep policy.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Errorf("report: %v", err)
		}
		got <- rep
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{URL: srv.URL, TokenFile: token, Transport: srv.Client().Transport, ReportInterval: 20 * time.Millisecond}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	config := policy.SidecarConfig{FailMode: "closed", File: policy.ConfigApplied}
	header := func() policy.Report {
		mu.Lock()
		defer mu.Unlock()
		c := config
		return policy.Report{Revision: 1, Mode: policy.Protect, Config: &c}
	}
	go c.ReportLoop(t.Context(), emptySource{}, header)
	next := func() policy.Report {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no report")
		}
		return policy.Report{}
	}
	if r := next(); r.Config == nil || r.Config.File != policy.ConfigApplied || len(r.Entries) != 0 {
		t.Fatalf("first report %+v, want the configuration at once", r)
	}
	mu.Lock()
	config.File, config.Message = policy.ConfigRefused, "why"
	mu.Unlock()
	// The change goes out with a report of its own, though nothing was observed.
	if r := next(); r.Config == nil || r.Config.File != policy.ConfigRefused || r.Config.Message != "why" {
		t.Fatalf("report after the change %+v, want the refused file", r)
	}
}
