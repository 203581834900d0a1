package pgclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"podwall.io/podwall/api/policy"
)

// TestFollowAsksAgainForACutBody: a policy whose body breaks off (the connection fails) is asked for
// again, from where the sidecar was; one that arrives whole moves it on, to its revision and ETag.
func TestFollowAsksAgainForACutBody(t *testing.T) {
	const doc = `{"namespace":"shop","workload":"Deployment/web","revision":5,"mode":"Protect"}`
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	var asked []string // each request's after and If-None-Match
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Query().Get("after")+" "+r.Header.Get("If-None-Match"))
		n := len(asked)
		mu.Unlock()
		switch n {
		case 1, 2:
			w.Header().Set(policy.HeaderRevision, "5")
			w.Header().Set("ETag", `"e5"`)
			w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
			if n == 1 { // half the body, then the connection fails
				io.WriteString(w, doc[:len(doc)/2])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			io.WriteString(w, doc)
		default:
			cancel()
			w.WriteHeader(http.StatusNotModified)
		}
	}))
	defer srv.Close()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{URL: srv.URL, TokenFile: token, Transport: srv.Client().Transport, MinBackoff: time.Millisecond}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	var applied []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Follow(ctx, Held{Revision: 3, Hash: "e3"}, func(body io.Reader) (*policy.Policy, error) {
			data, err := io.ReadAll(body)
			var p *policy.Policy
			if err == nil {
				p, err = policy.Decode(data)
			}
			mu.Lock()
			applied = append(applied, err)
			mu.Unlock()
			return p, err
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not ask a third time")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 2 || !errors.Is(applied[0], io.ErrUnexpectedEOF) || applied[1] != nil {
		t.Errorf("applies ended with %v, want a cut body, then the policy", applied)
	}
	if want := []string{`3 "e3"`, `3 "e3"`, `5 "e5"`}; len(asked) < 3 || !slices.Equal(asked[:3], want) {
		t.Errorf("requests asked after %q, want %q", asked, want)
	}
}
