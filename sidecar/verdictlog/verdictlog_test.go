package verdictlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/decide"
)

// lines decodes every line written so far, strictly: a line that is not one JSON object, or that has
// a field verdict.Line does not know, fails the test.
func lines(t *testing.T, out []byte) []verdict.Line {
	t.Helper()
	var got []verdict.Line
	for line := range strings.Lines(string(out)) {
		got = append(got, decodeStrict(t, []byte(line)))
	}
	return got
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 123456789, time.UTC)

var id = Identity{Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web"}

func newLogger(t *testing.T, w io.Writer, opts Options) (*Logger, *clock) {
	t.Helper()
	c := &clock{t: t0}
	opts.Now = c.now
	l, err := New(w, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, c
}

func closeLogger(t *testing.T, l *Logger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func egress(remote string) decide.Conn {
	return decide.Conn{Direction: policy.Egress, Proto: 6, Local: netip.MustParseAddrPort("10.244.0.5:40000"),
		Remote: netip.MustParseAddrPort(remote)}
}

func decision(v policy.Verdict, peer string) decide.Decision {
	rule := "default"
	if v == policy.Allow {
		rule = "r1"
	}
	return decide.Decision{Verdict: v, Rule: rule, Evaluator: "egress", Peer: peer, Mode: policy.Protect, Revision: 7}
}

// TestLine checks that each kind of line the Logger writes — a notice, a verdict line, one judged
// behind a redirect, one of a canary pod, a summary — decodes strictly into verdict.Line with the values
// logged. The notice takes nothing from the rate limit.
func TestLine(t *testing.T) {
	var out testutil.Buffer
	l, clk := newLogger(t, &out, Options{Rate: 1})
	l.Notice(verdict.NoticeAppNetRaw, "they \"bypass\"\n", []string{"web", "debug\x01"})
	l.Log(decide.Conn{Direction: policy.Loopback, Proto: 6, Local: netip.MustParseAddrPort("127.0.0.1:40000"),
		Remote: netip.MustParseAddrPort("127.0.0.1:15001"), Original: netip.MustParseAddrPort("[fd00::1]:443")},
		decide.Decision{Verdict: policy.Audit, Rule: "default", Evaluator: "default", Peer: "cidr:fd00::1/128",
			Redirected: true, Mode: policy.Monitor, Revision: 42})
	ingress := decide.Conn{Direction: policy.Ingress, Proto: 17, Local: netip.MustParseAddrPort("10.244.0.5:53"),
		Remote: netip.MustParseAddrPort("10.244.1.3:5000")}
	allow := decide.Decision{Verdict: policy.Allow, Rule: "dns\"\n", Evaluator: "ingress", Peer: "workload:a/\\b\x01",
		Mode: policy.Protect, Revision: 1, Canary: true}
	l.Log(ingress, allow)
	l.Log(ingress, allow) // rate limited
	clk.advance(time.Second)
	l.Log(ingress, allow)
	closeLogger(t, l)
	t1 := t0.Add(time.Second)
	want := []verdict.Line{{
		Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web",
		Notice: verdict.NoticeAppNetRaw, Message: "they \"bypass\"\n", Containers: []string{"web", "debug\x01"},
	}, {
		Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web",
		Direction: policy.Loopback, Proto: 6, Src: netip.MustParseAddrPort("127.0.0.1:40000"),
		Dst: netip.MustParseAddrPort("127.0.0.1:15001"), Peer: "cidr:fd00::1/128", Verdict: policy.Audit,
		Rule: "default", Mode: policy.Monitor, PolicyRevision: 42, Evaluator: "default",
		OriginalDst: netip.MustParseAddrPort("[fd00::1]:443"),
	}, {
		Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web",
		Direction: policy.Ingress, Proto: 17, Src: netip.MustParseAddrPort("10.244.1.3:5000"),
		Dst: netip.MustParseAddrPort("10.244.0.5:53"), Peer: "workload:a/\\b\x01", Verdict: policy.Allow,
		Rule: "dns\"\n", Mode: policy.Protect, PolicyRevision: 1, Canary: true, Evaluator: "ingress",
	}, {
		Time: t1, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web",
		Suppressed: 1, RateLimited: 1, SuppressedAllow: 1, Since: t0,
	}, {
		Time: t1, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web",
		Direction: policy.Ingress, Proto: 17, Src: netip.MustParseAddrPort("10.244.1.3:5000"),
		Dst: netip.MustParseAddrPort("10.244.0.5:53"), Peer: "workload:a/\\b\x01", Verdict: policy.Allow,
		Rule: "dns\"\n", Mode: policy.Protect, PolicyRevision: 1, Canary: true, Evaluator: "ingress",
	}}
	if diff := cmp.Diff(want, lines(t, out.Bytes()), sameLine); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

// TestRevokedLine checks that a revoked connection is logged whatever Options.Allows says, and that its
// line decodes strictly with verdict "revoked".
func TestRevokedLine(t *testing.T) {
	var out testutil.Buffer
	l, _ := newLogger(t, &out, Options{Allows: AllowsNone})
	c := egress("10.0.0.1:5432")
	d := decision(policy.Revoked, "cidr:10.0.0.1/32")
	l.Log(c, d)
	closeLogger(t, l)
	want := []verdict.Line{{Time: t0, Pod: id.Pod, Namespace: id.Namespace, Workload: id.Workload,
		Direction: policy.Egress, Proto: 6, Src: c.Src(), Dst: c.Dst(), Peer: d.Peer, Verdict: policy.Revoked,
		Rule: d.Rule, Mode: d.Mode, PolicyRevision: d.Revision, Evaluator: d.Evaluator}}
	if diff := cmp.Diff(want, lines(t, out.Bytes()), sameLine); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

// logged returns the verdict, dst and time of each verdict line, and the counts of each summary line.
func logged(t *testing.T, out *testutil.Buffer) []string {
	t.Helper()
	var got []string
	for _, l := range lines(t, out.Bytes()) {
		if l.IsSummary() {
			got = append(got, fmt.Sprintf("summary suppressed=%d rate_limited=%d dropped=%d deny=%d audit=%d allow=%d since=%s",
				l.Suppressed, l.RateLimited, l.Dropped, l.SuppressedDeny, l.SuppressedAudit, l.SuppressedAllow,
				l.Since.Format(time.RFC3339Nano)))
			continue
		}
		got = append(got, fmt.Sprintf("%s %s %s", l.Verdict, l.Dst, l.Time.Format(time.RFC3339Nano)))
	}
	return got
}

func TestAllows(t *testing.T) {
	type step struct {
		advance time.Duration
		v       policy.Verdict
		remote  string
		rule    string // empty: decision's
	}
	steps := []step{
		{0, policy.Allow, "10.0.0.1:80", ""},
		{0, policy.Allow, "10.0.0.1:80", ""},    // same peer and port
		{0, policy.Allow, "10.0.0.1:80", "new"}, // same peer and port, another rule
		{0, policy.Allow, "10.0.0.1:443", ""},   // same peer, other port
		{0, policy.Deny, "10.0.0.1:22", ""},
		{0, policy.Deny, "10.0.0.1:22", ""}, // denies always
		{0, policy.Audit, "10.0.0.1:22", ""},
		{30 * time.Second, policy.Allow, "10.0.0.1:80", ""},
		{30 * time.Second, policy.Allow, "10.0.0.1:80", ""}, // a new interval
	}
	const s0, s30, s60 = "2026-11-27T03:00:00.123456789Z", "2026-11-27T03:00:30.123456789Z", "2026-11-27T03:01:00.123456789Z"
	for _, tc := range []struct {
		allows   Allows
		want     []string
		filtered uint64
	}{
		{AllowsAll, []string{"allow 10.0.0.1:80 " + s0, "allow 10.0.0.1:80 " + s0, "allow 10.0.0.1:80 " + s0,
			"allow 10.0.0.1:443 " + s0,
			"deny 10.0.0.1:22 " + s0, "deny 10.0.0.1:22 " + s0, "audit 10.0.0.1:22 " + s0,
			"allow 10.0.0.1:80 " + s30, "allow 10.0.0.1:80 " + s60}, 0},
		{AllowsNone, []string{"deny 10.0.0.1:22 " + s0, "deny 10.0.0.1:22 " + s0, "audit 10.0.0.1:22 " + s0}, 6},
		{AllowsFirst, []string{"allow 10.0.0.1:80 " + s0, "allow 10.0.0.1:80 " + s0, "allow 10.0.0.1:443 " + s0,
			"deny 10.0.0.1:22 " + s0, "deny 10.0.0.1:22 " + s0, "audit 10.0.0.1:22 " + s0,
			"allow 10.0.0.1:80 " + s60}, 2},
	} {
		t.Run(string(tc.allows), func(t *testing.T) {
			var out testutil.Buffer
			l, clk := newLogger(t, &out, Options{Allows: tc.allows})
			for _, s := range steps {
				clk.advance(s.advance)
				d := decision(s.v, "cidr:10.0.0.1/32")
				if s.rule != "" {
					d.Rule = s.rule
				}
				l.Log(egress(s.remote), d)
			}
			closeLogger(t, l)
			if diff := cmp.Diff(tc.want, logged(t, &out)); diff != "" {
				t.Fatalf("lines (-want +got):\n%s", diff)
			}
			if st := l.Stats(); st.Filtered != tc.filtered || st.Logged != uint64(len(tc.want)) {
				t.Fatalf("stats %+v, want %d filtered and %d logged", st, tc.filtered, len(tc.want))
			}
		})
	}
}

// TestFirstRateLimited checks that an allow the rate limit suppressed does not count as the first.
func TestFirstRateLimited(t *testing.T) {
	var out testutil.Buffer
	l, clk := newLogger(t, &out, Options{Allows: AllowsFirst, Rate: 1})
	l.Log(egress("10.0.0.2:81"), decision(policy.Allow, "p"))
	l.Log(egress("10.0.0.1:80"), decision(policy.Allow, "p")) // rate limited
	clk.advance(time.Second)
	l.Log(egress("10.0.0.1:80"), decision(policy.Allow, "p"))
	closeLogger(t, l)
	want := []string{"allow 10.0.0.2:81 2026-11-27T03:00:00.123456789Z",
		"summary suppressed=1 rate_limited=1 dropped=0 deny=0 audit=0 allow=1 since=2026-11-27T03:00:00.123456789Z",
		"allow 10.0.0.1:80 2026-11-27T03:00:01.123456789Z"}
	if diff := cmp.Diff(want, logged(t, &out)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

func TestFirstForgetsWhenFull(t *testing.T) {
	f := firstFilter{interval: time.Hour, start: t0, seen: map[firstKey]struct{}{}}
	f.mark(firstKey{peer: "a"})
	if !f.seenBefore(firstKey{peer: "a"}, t0) {
		t.Fatal("a marked key is not seen")
	}
	for i := range maxFirstKeys {
		f.mark(firstKey{port: uint16(i), peer: "b"})
	}
	if f.seenBefore(firstKey{peer: "a"}, t0) || len(f.seen) != 0 {
		t.Fatalf("a full filter kept %d keys", len(f.seen))
	}
}

func TestRateLimit(t *testing.T) {
	var out testutil.Buffer
	l, clk := newLogger(t, &out, Options{Rate: 2, Burst: 3})
	for i := range 5 {
		l.Log(egress(fmt.Sprintf("10.0.0.%d:80", i)), decision(policy.Deny, "p"))
	}
	clk.advance(250 * time.Millisecond) // half a token: still limited
	l.Log(egress("10.0.0.9:80"), decision(policy.Deny, "p"))
	clk.advance(250 * time.Millisecond) // one token
	l.Log(egress("10.0.0.10:80"), decision(policy.Deny, "p"))
	l.Log(egress("10.0.0.11:80"), decision(policy.Deny, "p"))
	closeLogger(t, l)
	want := []string{
		"deny 10.0.0.0:80 2026-11-27T03:00:00.123456789Z",
		"deny 10.0.0.1:80 2026-11-27T03:00:00.123456789Z",
		"deny 10.0.0.2:80 2026-11-27T03:00:00.123456789Z",
		"summary suppressed=3 rate_limited=3 dropped=0 deny=3 audit=0 allow=0 since=2026-11-27T03:00:00.123456789Z",
		"deny 10.0.0.10:80 2026-11-27T03:00:00.623456789Z",
		// The last line is suppressed too, and Close reports it.
		"summary suppressed=1 rate_limited=1 dropped=0 deny=1 audit=0 allow=0 since=2026-11-27T03:00:00.623456789Z",
	}
	if diff := cmp.Diff(want, logged(t, &out)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
	want2 := Stats{Logged: 4, RateLimited: 4, Summaries: 2}
	if diff := cmp.Diff(want2, l.Stats()); diff != "" {
		t.Fatalf("stats (-want +got):\n%s", diff)
	}
}

// TestRateLimitPerVerdict checks that each verdict has a budget of its own: a flood of denies that
// empties the deny bucket leaves the audit, allow and revoked lines logged, and the summary still
// counts the suppressed lines by verdict.
func TestRateLimitPerVerdict(t *testing.T) {
	var out testutil.Buffer
	l, _ := newLogger(t, &out, Options{Rate: 1, Burst: 1})
	for i := range 100 {
		l.Log(egress(fmt.Sprintf("10.0.0.%d:80", i)), decision(policy.Deny, "p"))
	}
	l.Log(egress("10.0.1.1:80"), decision(policy.Audit, "p"))
	l.Log(egress("10.0.1.2:80"), decision(policy.Allow, "p"))
	l.Log(egress("10.0.1.3:80"), decision(policy.Allow, "p")) // the allow bucket is empty now
	l.Log(egress("10.0.1.4:80"), decision(policy.Revoked, "p"))
	closeLogger(t, l)
	want := []string{
		"deny 10.0.0.0:80 2026-11-27T03:00:00.123456789Z",
		"summary suppressed=99 rate_limited=99 dropped=0 deny=99 audit=0 allow=0 since=2026-11-27T03:00:00.123456789Z",
		"audit 10.0.1.1:80 2026-11-27T03:00:00.123456789Z",
		"allow 10.0.1.2:80 2026-11-27T03:00:00.123456789Z",
		"summary suppressed=1 rate_limited=1 dropped=0 deny=0 audit=0 allow=1 since=2026-11-27T03:00:00.123456789Z",
		"revoked 10.0.1.4:80 2026-11-27T03:00:00.123456789Z",
	}
	if diff := cmp.Diff(want, logged(t, &out)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

// TestRateLimitClockStepsBack checks that a clock stepping back neither refills the bucket nor breaks
// it: the next second's token comes as usual.
func TestRateLimitClockStepsBack(t *testing.T) {
	var out testutil.Buffer
	l, clk := newLogger(t, &out, Options{Rate: 1})
	l.Log(egress("10.0.0.1:80"), decision(policy.Deny, "p"))
	clk.advance(-time.Hour)
	l.Log(egress("10.0.0.2:80"), decision(policy.Deny, "p"))
	clk.advance(time.Hour + time.Second)
	l.Log(egress("10.0.0.3:80"), decision(policy.Deny, "p"))
	closeLogger(t, l)
	want := []string{"deny 10.0.0.1:80 2026-11-27T03:00:00.123456789Z",
		"summary suppressed=1 rate_limited=1 dropped=0 deny=1 audit=0 allow=0 since=2026-11-27T02:00:00.123456789Z",
		"deny 10.0.0.3:80 2026-11-27T03:00:01.123456789Z"}
	if diff := cmp.Diff(want, logged(t, &out)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	testutil.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.Buffer.Write(p)
}

// TestBlockedWriter checks that a writer that blocks never blocks Log, and that what it costs is counted
// and reported once the writer is back.
func TestBlockedWriter(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	l, _ := newLogger(t, w, Options{BufferBytes: 4096})
	const workers, each = 4, 200
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() {
				for i := range each {
					l.Log(egress(fmt.Sprintf("10.0.%d.%d:80", g, i)), decision(policy.Deny, "p"))
				}
			})
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Log blocked behind a blocked writer")
	}
	st := l.Stats()
	if st.Dropped == 0 || st.Logged+st.Dropped != workers*each {
		t.Fatalf("stats %+v: want drops, and every line logged or dropped", st)
	}
	close(w.release)
	closeLogger(t, l)
	var written, dropped uint64
	for _, line := range lines(t, w.Bytes()) {
		if line.IsSummary() {
			dropped += line.Dropped
		} else {
			written++
		}
	}
	if written != st.Logged || dropped != st.Dropped {
		t.Fatalf("wrote %d lines reporting %d dropped; stats %+v", written, dropped, st)
	}
}

func TestCloseTimesOutOnBlockedWriter(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	defer close(w.release)
	l, _ := newLogger(t, w, Options{})
	l.Log(egress("10.0.0.1:80"), decision(policy.Deny, "p"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want a deadline error", err)
	}
	l.Log(egress("10.0.0.1:80"), decision(policy.Deny, "p"))
	if st := l.Stats(); st.Dropped != 1 {
		t.Fatalf("a line after Close: stats %+v, want it dropped", st)
	}
}

// TestLost: lines lost before they reached the Logger are counted as dropped allows, told by the
// summary line before the next line written.
func TestLost(t *testing.T) {
	var out testutil.Buffer
	l, _ := newLogger(t, &out, Options{})
	l.Lost(policy.Allow, 7)
	l.Log(egress("10.0.0.1:80"), decision(policy.Allow, "p"))
	closeLogger(t, l)
	got := lines(t, out.Bytes())
	if len(got) != 2 || !got[0].IsSummary() || got[0].Dropped != 7 || got[0].SuppressedAllow != 7 || got[1].Verdict != policy.Allow {
		t.Fatalf("lines %+v, want a summary of 7 dropped allows, then the allow", got)
	}
	if st := l.Stats(); st.Dropped != 7 || st.Logged != 1 {
		t.Errorf("stats %+v, want 7 dropped and 1 logged", st)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrorsCounted(t *testing.T) {
	l, _ := newLogger(t, failingWriter{}, Options{})
	l.Log(egress("10.0.0.1:80"), decision(policy.Deny, "p"))
	closeLogger(t, l)
	if st := l.Stats(); st.WriteErrors != 1 || st.Logged != 1 {
		t.Fatalf("stats %+v, want one write error", st)
	}
}

func TestConcurrentLines(t *testing.T) {
	var out testutil.Buffer
	l, _ := newLogger(t, &out, Options{})
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				l.Log(egress(fmt.Sprintf("10.0.%d.%d:80", g, i%250)), decision(policy.Allow, fmt.Sprint("peer-", g)))
			}
		})
	}
	wg.Wait()
	closeLogger(t, l)
	seen := map[string]int{}
	for _, line := range lines(t, out.Bytes()) {
		seen[line.Peer]++
	}
	for g := range workers {
		if n := seen[fmt.Sprint("peer-", g)]; n != each {
			t.Errorf("worker %d: %d lines, want %d", g, n, each)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, opts := range []Options{
		{Allows: "some"}, {Rate: -1}, {Rate: math.NaN()}, {Rate: math.Inf(1)}, {Burst: -1},
		{BufferBytes: -1}, {FirstInterval: -time.Second},
	} {
		if l, err := New(io.Discard, id, opts); err == nil {
			_ = l.Close(context.Background())
			t.Errorf("New accepted %+v", opts)
		}
	}
}

func TestAllowsUnmarshalText(t *testing.T) {
	var a Allows
	if err := a.UnmarshalText([]byte("first")); err != nil || a != AllowsFirst {
		t.Fatalf("first: %v, %q", err, a)
	}
	if err := a.UnmarshalText([]byte("some")); err == nil || a != AllowsFirst {
		t.Fatalf("some: %v, %q", err, a)
	}
}

func TestLogDoesNotAllocate(t *testing.T) {
	c := egress("[fd00::1]:443")
	for _, tc := range []struct {
		allows Allows
		v      policy.Verdict
		rate   float64 // the clock stands still: past the burst, every line is rate limited
	}{{AllowsFirst, policy.Deny, 0}, {AllowsFirst, policy.Allow, 0}, {AllowsAll, policy.Allow, 0},
		{AllowsNone, policy.Allow, 0}, {AllowsAll, policy.Deny, 100}} {
		l, _ := newLogger(t, io.Discard, Options{Allows: tc.allows, Rate: tc.rate})
		d := decision(tc.v, "workload:shop/Deployment/api")
		if n := testing.AllocsPerRun(1000, func() { l.Log(c, d) }); n != 0 {
			t.Errorf("%s, %s, rate %v: Log allocates %v times per line", tc.allows, tc.v, tc.rate, n)
		}
	}
}

func BenchmarkLog(b *testing.B) {
	l, err := New(io.Discard, id, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Close(context.Background()) }()
	c, d := egress("10.0.0.1:443"), decision(policy.Allow, "workload:shop/Deployment/api")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(c, d)
		}
	})
}

// TestFirstRedirectedKeysOnOriginalPort checks that app→proxy connections, which all go to the proxy's
// port, are told apart by the port of the destination they were judged against.
func TestFirstRedirectedKeysOnOriginalPort(t *testing.T) {
	var out testutil.Buffer
	l, _ := newLogger(t, &out, Options{Allows: AllowsFirst})
	for _, orig := range []string{"10.0.0.1:80", "10.0.0.1:443", "10.0.0.1:443"} {
		c := decide.Conn{Direction: policy.Loopback, Proto: 6, Local: netip.MustParseAddrPort("127.0.0.1:40000"),
			Remote: netip.MustParseAddrPort("127.0.0.1:15001"), Original: netip.MustParseAddrPort(orig)}
		d := decision(policy.Allow, "cidr:10.0.0.1/32")
		d.Redirected = true
		l.Log(c, d)
	}
	closeLogger(t, l)
	var got []string
	for _, line := range lines(t, out.Bytes()) {
		got = append(got, line.OriginalDst.String())
	}
	if diff := cmp.Diff([]string{"10.0.0.1:80", "10.0.0.1:443"}, got); diff != "" {
		t.Fatalf("logged original destinations (-want +got):\n%s", diff)
	}
}
