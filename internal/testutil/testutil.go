// Package testutil holds the helpers every package's tests share: polling for a condition with a
// deadline, a buffer that goroutines under test may write while the test reads it, and skipping a test
// that lacks what it needs (root, a browser) — except in CI, where such a test fails rather than pass
// unseen; and the median of a benchmark's rounds, and the line each benchmark figure is printed as.
package testutil

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Eventually calls check until it returns nil. Once timeout has passed it fails the test with check's
// last error. The wait between calls grows from 10ms to 250ms: a quick condition is seen quickly, a slow
// one (a kubectl round trip) is not hammered.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// Await is Eventually for a condition worth naming: a failure says what was awaited.
func Await(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if err := check(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// HTTPOK gets url with client (http.DefaultClient when nil) and says why the answer is not 200 OK: the
// check of a readiness endpoint, for Eventually.
func HTTPOK(client *http.Client, url string) error {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// Buffer is a bytes.Buffer safe for concurrent use: code under test writes it from its goroutines while
// the test reads what has been written so far. The zero Buffer is empty and ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what has been written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SkipUnlessCI skips the test, saying why, because the machine lacks something it needs. Where the
// environment sets CI=true the test fails instead: CI is where every test is promised to run, and a
// skipped test there would look like a passed one.
func SkipUnlessCI(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: this test must run here)", why)
	}
	t.Skip(why)
}

// RequireRoot stops the test unless it runs as root (see SkipUnlessCI): network namespaces and
// nftables need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipUnlessCI(t, "needs root")
	}
}

// Median is the middle value of xs (the mean of the two middle ones for an even count), xs left as
// it is: a benchmark's figure from its rounds.
func Median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Bench prints one figure of a make bench-* target on stdout, as every one of them prints its
// figures: "BENCH <name> value=<v> unit=<u> baseline=<b> ratio=<v/b>". Equal figures have the ratio
// 1, two zeros too.
func Bench(name string, value float64, unit string, baseline float64) {
	fmt.Println(benchLine(name, value, unit, baseline))
}

func benchLine(name string, value float64, unit string, baseline float64) string {
	ratio := 1.0
	if value != baseline {
		ratio = value / baseline
	}
	return fmt.Sprintf("BENCH %s value=%s unit=%s baseline=%s ratio=%.3f", name, benchNum(value), unit, benchNum(baseline), ratio)
}

// benchNum writes a figure with three or more significant digits and no exponent, zero as 0.
func benchNum(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 5, 64)
}
