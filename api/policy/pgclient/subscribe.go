package pgclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"podwall.io/podwall/api/policy"
)

// Subscribe long-polls the workload's policy until ctx ends, starting from held (the policy in force:
// cached or a baseline, nil for none), and calls apply with every newer one. A policy that does not
// decode, or that apply refuses, is logged and not asked for again: the one in force stays, and the
// client waits for the next revision.
func (c *Client) Subscribe(ctx context.Context, held *policy.Policy, apply func(*policy.Policy) error) {
	var after int64
	var etag string
	if held != nil && held.Revision > 0 {
		// A policy from policygen (a baseline has revision 0): name its content, so that a replica that
		// numbered the same content differently does not leave this sidecar behind.
		after, etag = held.Revision, `"`+policy.ContentHash(held)+`"`
	}
	for retry := c.backoff; ctx.Err() == nil; {
		s, err := c.poll(ctx, after, etag)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.failed("policy", err, after)
			if !sleep(ctx, retry.Step()) {
				return
			}
			continue
		}
		c.succeeded()
		retry = c.backoff
		if s.body == nil { // nothing newer, or no WorkloadPolicy yet
			continue
		}
		p, err := policy.Decode(s.body)
		if err == nil {
			s.revision = p.Revision
			err = apply(p)
		}
		if err != nil {
			c.log.Error(err, "policy refused; the previous one stays in force", "revision", s.revision)
		} else {
			c.log.Info("policy applied", "revision", p.Revision, "mode", string(p.Mode), "canary", p.Canary)
		}
		after, etag = max(after, s.revision), s.etag
	}
}

// served is one answer to a long-poll: a body only when there is a newer policy.
type served struct {
	body     []byte
	revision int64
	etag     string
}

// poll makes one long-poll. 304 (the wait ended with nothing newer) and 404 (the workload has no
// policy yet) come back empty; any status but those and 200 is an error.
func (c *Client) poll(ctx context.Context, after int64, etag string) (served, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "wait": {strconv.Itoa(int(c.opts.Wait.Seconds()))}}
	h := http.Header{}
	if etag != "" {
		h.Set("If-None-Match", etag)
	}
	resp, err := c.request(ctx, http.MethodGet, policy.PolicyPath+"?"+q.Encode(), nil, h)
	if err != nil {
		return served{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified, http.StatusNotFound:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return served{}, nil
	default:
		return served{}, fmt.Errorf("get policy: %w", apiError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, policy.MaxPolicyBytes+1))
	if err != nil {
		return served{}, fmt.Errorf("read policy: %w", err)
	}
	rev, _ := strconv.ParseInt(resp.Header.Get(policy.HeaderRevision), 10, 64)
	return served{body: body, revision: rev, etag: resp.Header.Get("ETag")}, nil
}
