package pgclient

import (
	"context"
	"errors"
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
// client waits for the next revision. Each policy is decoded whole; Follow hands the document over
// as it arrives instead.
func (c *Client) Subscribe(ctx context.Context, held *policy.Policy, apply func(*policy.Policy) error) {
	var h Held
	if held != nil && held.Revision > 0 {
		// A policy from policygen (a baseline has revision 0): name its content, so that a replica that
		// numbered the same content differently does not leave this sidecar behind.
		h = Held{Revision: held.Revision, Hash: policy.ContentHash(held)}
	}
	c.Follow(ctx, h, func(body io.Reader) (*policy.Policy, error) {
		data, err := io.ReadAll(io.LimitReader(body, policy.MaxPolicyBytes+1))
		if err != nil {
			return nil, err
		}
		p, err := policy.Decode(data)
		if err != nil {
			return nil, err
		}
		return p, apply(p)
	})
}

// Held is the policy a sidecar holds as it starts to follow policygen: its revision and ContentHash
// (zero for none, or a baseline).
type Held struct {
	Revision int64
	Hash     string
}

// Follow is Subscribe for a caller that reads each policy document itself, as it arrives, rather than
// holding it whole: apply reads the document (JSON, at most policy.MaxPolicyBytes) from body, applies
// it, and returns it (its rules may be left out: only its revision, mode and canary are read, for the
// log). A document that cannot be read to its end, the connection failing, is asked for again.
func (c *Client) Follow(ctx context.Context, held Held, apply func(body io.Reader) (*policy.Policy, error)) {
	after, etag := held.Revision, ""
	if held.Hash != "" {
		etag = `"` + held.Hash + `"`
	}
	for retry := c.backoff; ctx.Err() == nil; {
		s, err := c.poll(ctx, after, etag)
		var p *policy.Policy
		var refused error
		if err == nil && s.body != nil {
			body := &bodyReader{r: s.body}
			p, refused = apply(body)
			s.body.Close()
			if body.err != nil { // the connection, not the policy: ask again
				err = fmt.Errorf("read policy: %w", body.err)
			}
		}
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
		if p != nil {
			s.revision = p.Revision
		}
		if refused != nil {
			c.log.Error(refused, "policy refused; the previous one stays in force", "revision", s.revision)
		} else {
			c.log.Info("policy applied", "revision", p.Revision, "mode", string(p.Mode), "canary", p.Canary)
		}
		after, etag = max(after, s.revision), s.etag
	}
}

// bodyReader keeps the first error reading a response body met, but its end.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	return n, err
}

// served is one answer to a long-poll: a body, to read and close, only when there is a newer policy.
type served struct {
	body     io.ReadCloser
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
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified, http.StatusNotFound:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return served{}, nil
	default:
		defer resp.Body.Close()
		return served{}, fmt.Errorf("get policy: %w", apiError(resp))
	}
	rev, _ := strconv.ParseInt(resp.Header.Get(policy.HeaderRevision), 10, 64)
	return served{body: resp.Body, revision: rev, etag: resp.Header.Get("ETag")}, nil
}
