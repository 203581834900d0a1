package verdictlog

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
)

// Allows says which allowed connections get a verdict line.
type Allows string

// The choices for Options.Allows.
const (
	// AllowsAll logs every allow.
	AllowsAll Allows = "all"
	// AllowsNone logs no allow: only denies and audits.
	AllowsNone Allows = "none"
	// AllowsFirst logs the first allow per direction, peer, port, DNS name and rule in each
	// FirstInterval.
	AllowsFirst Allows = "first"
)

// UnmarshalText accepts "all", "none" or "first", so that configuration can hold an Allows and refuse
// anything else when it is read.
func (a *Allows) UnmarshalText(text []byte) error {
	switch v := Allows(text); v {
	case AllowsAll, AllowsNone, AllowsFirst:
		*a = v
		return nil
	}
	return fmt.Errorf("allows %q: want all, none or first", text)
}

// Identity names the pod whose verdicts the log carries. It is fixed for the sidecar's life.
type Identity struct {
	Pod, Namespace, Workload string
}

// Options tune a Logger. The zero value logs every line, unlimited.
type Options struct {
	// Allows picks the allows to log; empty means AllowsAll.
	Allows Allows
	// FirstInterval is AllowsFirst's interval; zero means one minute.
	FirstInterval time.Duration
	// Rate is the sustained limit in lines per second; zero means no limit. Each verdict (allow, audit,
	// deny, revoked) has a bucket of its own, so that a flood of one cannot crowd out the lines of
	// another: a SYN flood of denied connections leaves the allows logged, and the reverse.
	Rate float64
	// Burst is how many lines of one verdict may pass at once above Rate; zero means Rate, and at
	// least one.
	Burst int
	// BufferBytes is how far the writer may fall behind before lines are dropped; zero means 1 MiB.
	BufferBytes int
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Stats are the Logger's counters since New, for the caller to export as metrics.
type Stats struct {
	// Logged counts verdict lines handed to the writer.
	Logged uint64
	// Filtered counts allows left out by Options.Allows.
	Filtered uint64
	// RateLimited counts lines the rate limit suppressed.
	RateLimited uint64
	// Dropped counts lines suppressed because the writer fell BufferBytes behind, or that came after
	// Close.
	Dropped uint64
	// Summaries counts summary lines written for suppressed lines.
	Summaries uint64
	// WriteErrors counts failed writes; each may have lost a batch of lines.
	WriteErrors uint64
}

// Logger writes verdict lines. It is safe for concurrent use by every queue worker.
type Logger struct {
	w        io.Writer
	identity []byte // the escaped pod, namespace and workload fields of every line
	now      func() time.Time
	allows   Allows
	maxBuf   int

	mu  sync.Mutex
	buf []byte // lines waiting for the writer
	// limits are the token buckets by verdict; index 0 takes a verdict out of range.
	limits  [policy.Revoked + 1]*rate.Limiter
	first   firstFilter
	pending suppressed
	stats   Stats
	closed  bool

	wake chan struct{} // one token: the writer has something to do
	done chan struct{} // closed by Close
	exit chan struct{} // closed when the writer has flushed and returned
}

// New starts a Logger that writes to w (os.Stdout in production). Call Close to flush and stop it.
func New(w io.Writer, id Identity, opts Options) (*Logger, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	l := &Logger{
		w:        w,
		identity: appendIdentity(nil, id),
		now:      opts.Now,
		allows:   opts.Allows,
		maxBuf:   opts.BufferBytes,
		first:    firstFilter{interval: opts.FirstInterval, seen: map[firstKey]struct{}{}},
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		exit:     make(chan struct{}),
	}
	for i := range l.limits {
		l.limits[i] = newLimiter(opts.Rate, opts.Burst)
	}
	go l.run()
	return l, nil
}

func (o *Options) setDefaults() error {
	switch o.Allows {
	case "":
		o.Allows = AllowsAll
	case AllowsAll, AllowsNone, AllowsFirst:
	default:
		return fmt.Errorf("allows %q: want all, none or first", o.Allows)
	}
	if o.FirstInterval < 0 || o.Burst < 0 || o.BufferBytes < 0 {
		return fmt.Errorf("negative option in %+v", *o)
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		return fmt.Errorf("rate %v: want a finite number of lines per second, 0 for no limit", o.Rate)
	}
	if o.FirstInterval == 0 {
		o.FirstInterval = time.Minute
	}
	if o.Burst == 0 {
		o.Burst = max(1, int(o.Rate))
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = 1 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Log writes the verdict line of connection c decided as d, if the options want it. It never blocks on
// the writer.
func (l *Logger) Log(c decide.Conn, d decide.Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key, first, wanted := l.wanted(&c, &d, now)
	switch {
	case !wanted:
		l.stats.Filtered++
		return
	case l.closed || len(l.buf) >= l.maxBuf:
		l.stats.Dropped++
		l.pending.add(d.Verdict, now, false, 1)
		return
	case !l.limit(d.Verdict).AllowN(now, 1):
		l.stats.RateLimited++
		l.pending.add(d.Verdict, now, true, 1)
		return
	}
	if first {
		l.first.mark(key)
	}
	l.flushSummary(now)
	l.buf = l.appendLine(l.buf, now, &c, &d)
	l.stats.Logged++
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Lost counts n lines of verdict v that never reached the Logger (the kernel could not hand on the
// packets they were about) as dropped: the next summary line tells them.
func (l *Logger) Lost(v policy.Verdict, n uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Dropped += n
	l.pending.add(v, l.now(), false, n)
}

// limit is the token bucket of verdict v's lines.
func (l *Logger) limit(v policy.Verdict) *rate.Limiter {
	if int(v) >= len(l.limits) {
		v = 0
	}
	return l.limits[v]
}

// Notice writes a notice line (verdict.Line's notice fields): something the pod's operator must know
// about its guard, told once, so neither the rate limit nor the buffer bound refuses it. A notice after
// Close is not written.
func (l *Logger) Notice(notice, message string, containers []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.buf = l.appendNotice(l.buf, l.now(), notice, message, containers)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// wanted applies Options.Allows. For an allow under AllowsFirst it also returns the key to mark (first)
// once the line is actually written. l.mu is held.
func (l *Logger) wanted(c *decide.Conn, d *decide.Decision, now time.Time) (key firstKey, first, ok bool) {
	if d.Verdict != policy.Allow {
		return key, false, true
	}
	switch l.allows {
	case AllowsNone:
		return key, false, false
	case AllowsFirst:
		key = firstKey{dir: c.Direction, port: c.Dst().Port(), peer: d.Peer, name: d.Name, rule: d.Rule}
		if d.Redirected {
			key.port = c.Original.Port()
		}
		return key, true, !l.first.seenBefore(key, now)
	}
	return key, false, true
}

// flushSummary appends the summary of what was suppressed, if anything was. l.mu is held.
func (l *Logger) flushSummary(now time.Time) {
	if !l.pending.any() {
		return
	}
	l.buf = l.appendSummary(l.buf, now, &l.pending)
	l.pending = suppressed{}
	l.stats.Summaries++
}

// Stats returns the counters.
func (l *Logger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close writes the summary of anything still suppressed, waits for the writer to write what is
// buffered, and stops it. If w blocks longer than ctx allows, Close returns ctx's error and the writer
// finishes in the background. Lines logged after Close are counted as dropped.
func (l *Logger) Close(ctx context.Context) error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.flushSummary(l.now())
		close(l.done)
	}
	l.mu.Unlock()
	select {
	case <-l.exit:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush verdict log: %w", ctx.Err())
	}
}

// run is the writer: it swaps the pending lines out under the mutex and writes them without it.
func (l *Logger) run() {
	defer close(l.exit)
	var out []byte
	for {
		select {
		case <-l.wake:
			out = l.write(out)
		case <-l.done:
			l.write(out)
			return
		}
	}
}

// write writes the pending lines and returns the emptied buffer for the next swap.
func (l *Logger) write(out []byte) []byte {
	l.mu.Lock()
	out, l.buf = l.buf, out[:0]
	l.mu.Unlock()
	if len(out) == 0 {
		return out
	}
	if _, err := l.w.Write(out); err != nil {
		l.mu.Lock()
		l.stats.WriteErrors++
		l.mu.Unlock()
	}
	return out
}
