package pgclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"podwall.io/podwall/api/policy"
)

// ReportSource is where reports come from: report.Aggregator.
type ReportSource interface {
	// Drain takes every pending entry, oldest first.
	Drain() []policy.ReportEntry
	// Restore puts back entries that could not be delivered.
	Restore([]policy.ReportEntry)
	// Dropped counts entries evicted unreported since the start.
	Dropped() uint64
}

// ReportLoop sends what src gathered every ReportInterval until ctx ends. header fills in the
// report's identity, revision, mode and effective configuration at sending time; a configuration not
// yet delivered is sent even with no entries, the first at once. Undelivered entries go back into src
// (which bounds them), and a failing policygen is retried with backoff; the verdict path never waits
// for it.
func (c *Client) ReportLoop(ctx context.Context, src ReportSource, header func() policy.Report) {
	var reported uint64            // src.Dropped() at the last delivery
	var told *policy.SidecarConfig // the configuration last delivered
	wait, retry := time.Duration(0), c.backoff
	for sleep(ctx, wait) {
		entries, dropped, config := src.Drain(), src.Dropped(), header().Config
		if len(entries) == 0 && dropped == reported && sameConfig(config, told) {
			wait = c.opts.ReportInterval
			continue
		}
		sent, retryAfter, err := c.send(ctx, entries, dropped-reported, header)
		if sent < len(entries) {
			src.Restore(entries[sent:])
		}
		if err == nil {
			reported, told, wait, retry = dropped, config, c.opts.ReportInterval, c.backoff
			c.succeeded()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.failed("reports", err, header().Revision)
		wait = max(retryAfter, retry.Step())
	}
}

// sameConfig says whether two reported configurations are the same (both absent counts).
func sameConfig(a, b *policy.SidecarConfig) bool {
	return a == b || a != nil && b != nil && *a == *b
}

// send posts entries in reports of at most MaxReportEntries. It returns how many entries were
// delivered (or refused as malformed, which a retry would not mend) and, on a 429, how long policygen
// asked to wait.
func (c *Client) send(ctx context.Context, entries []policy.ReportEntry, dropped uint64, header func() policy.Report) (int, time.Duration, error) {
	sent := 0
	for first := true; first || sent < len(entries); first = false {
		n := min(len(entries)-sent, policy.MaxReportEntries)
		r := header()
		r.Entries, r.Dropped = entries[sent:sent+n], 0
		if first {
			r.Dropped = dropped
		}
		body, err := json.Marshal(&r)
		if err != nil {
			return sent, 0, fmt.Errorf("encode report: %w", err)
		}
		resp, err := c.request(ctx, http.MethodPost, policy.ReportsPath, bytes.NewReader(body),
			http.Header{"Content-Type": {"application/json"}})
		if err != nil {
			return sent, 0, err
		}
		switch resp.StatusCode {
		case http.StatusAccepted, http.StatusOK:
		case http.StatusBadRequest:
			c.log.Error(apiError(resp), "policygen refused a report; its entries are dropped", "entries", n)
		case http.StatusTooManyRequests:
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			err := apiError(resp)
			resp.Body.Close()
			return sent, time.Duration(secs) * time.Second, fmt.Errorf("post report: %w", err)
		default:
			err := apiError(resp)
			resp.Body.Close()
			return sent, 0, fmt.Errorf("post report: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		sent += n
	}
	return sent, 0, nil
}
