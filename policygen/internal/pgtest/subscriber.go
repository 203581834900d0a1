package pgtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"podwall.io/podwall/api/policy"
)

// Subscriber plays a sidecar's policy client: it long-polls policygen with a pod's token, keeps the
// last policy it got, and moves to the next URL when a replica fails (as a Service would send it
// elsewhere). It records what it held and when, for tests to judge.
type Subscriber struct {
	URLs   []string
	Token  string
	Client *http.Client
	// Wait is the long-poll wait asked for, in seconds (30 when 0).
	Wait int
	// OnUpdate, if set, is called with each new policy and when it arrived.
	OnUpdate func(*policy.Policy, time.Time)

	mu        sync.Mutex
	current   *policy.Policy
	etag      string
	revisions []int64
	errors    int
}

// Run polls until ctx ends.
func (s *Subscriber) Run(ctx context.Context) {
	url := 0
	for ctx.Err() == nil {
		if err := s.poll(ctx, s.URLs[url%len(s.URLs)]); err != nil && ctx.Err() == nil {
			s.mu.Lock()
			s.errors++
			s.mu.Unlock()
			url++
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (s *Subscriber) poll(ctx context.Context, base string) error {
	s.mu.Lock()
	after, etag := int64(0), s.etag
	if s.current != nil {
		after = s.current.Revision
	}
	s.mu.Unlock()
	wait := s.Wait
	if wait == 0 {
		wait = 30
	}
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/policy?after=%d&wait=%d", base, after, wait), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("GET policy: %d %s", resp.StatusCode, body)
	}
	p, err := policy.Decode(body)
	if err != nil {
		return err
	}
	if rev, _ := strconv.ParseInt(resp.Header.Get("X-Podwall-Revision"), 10, 64); rev != p.Revision {
		return fmt.Errorf("header revision %d, body %d", rev, p.Revision)
	}
	now := time.Now()
	s.mu.Lock()
	s.current, s.etag = p, resp.Header.Get("ETag")
	s.revisions = append(s.revisions, p.Revision)
	s.mu.Unlock()
	if s.OnUpdate != nil {
		s.OnUpdate(p, now)
	}
	return nil
}

// Current is the policy held now (nil before the first).
func (s *Subscriber) Current() *policy.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Revisions lists the revisions received, in order.
func (s *Subscriber) Revisions() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.revisions...)
}

// Errors counts failed polls (a replica gone, a refused request).
func (s *Subscriber) Errors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errors
}
