package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("check called %d times, want 3", calls)
	}
}

// recorder is a testing.TB that records how a helper ended the test. Fatalf and Skip stop the calling
// goroutine as the real ones do, so the helper under test runs in a goroutine of its own.
type recorder struct {
	testing.TB
	failed, skipped string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

// run calls f with a recorder and waits for it to return or stop.
func run(f func(testing.TB)) *recorder {
	r := &recorder{}
	var wg sync.WaitGroup
	wg.Go(func() { f(r) })
	wg.Wait()
	return r
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	calls := 0
	r := run(func(tb testing.TB) {
		Eventually(tb, 30*time.Millisecond, func() error { calls++; return fmt.Errorf("attempt %d", calls) })
	})
	if want := fmt.Sprintf("after 30ms: attempt %d", calls); r.failed != want || calls < 2 {
		t.Fatalf("failed with %q after %d calls, want %q", r.failed, calls, want)
	}
}

func TestSkipUnlessCI(t *testing.T) {
	for _, tc := range []struct {
		ci                    string
		wantFailed, wantSkips bool
	}{{"", false, true}, {"false", false, true}, {"true", true, false}} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := run(func(tb testing.TB) { SkipUnlessCI(tb, "no browser") })
			if (r.failed != "") != tc.wantFailed || (r.skipped != "") != tc.wantSkips ||
				!strings.Contains(r.failed+r.skipped, "no browser") {
				t.Fatalf("failed %q, skipped %q", r.failed, r.skipped)
			}
		})
	}
}

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(string(b.Bytes()), "x\n"); n != 800 {
		t.Fatalf("%d writes kept, want 800", n)
	}
}

func TestMedian(t *testing.T) {
	xs := []float64{5, 1, 3}
	if m := Median(xs); m != 3 {
		t.Errorf("median of %v: %v, want 3", xs, m)
	}
	if xs[0] != 5 {
		t.Errorf("Median sorted its argument: %v", xs)
	}
	if m := Median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 1..4: %v, want 2.5", m)
	}
}

func TestBenchLine(t *testing.T) {
	for _, tc := range []struct {
		value, baseline float64
		want            string
	}{
		{2.74, 1, "BENCH x value=2.740 unit=u baseline=1.000 ratio=2.740"},
		{16.56, 12, "BENCH x value=16.6 unit=u baseline=12.0 ratio=1.380"},
		{9144, 8900, "BENCH x value=9144 unit=u baseline=8900 ratio=1.027"},
		{0.00159, 2.518, "BENCH x value=0.00159 unit=u baseline=2.518 ratio=0.001"},
		{0, 0, "BENCH x value=0 unit=u baseline=0 ratio=1.000"},
		{0, 4, "BENCH x value=0 unit=u baseline=4.000 ratio=0.000"},
	} {
		if got := benchLine("x", tc.value, "u", tc.baseline); got != tc.want {
			t.Errorf("benchLine(%v, %v) = %q, want %q", tc.value, tc.baseline, got, tc.want)
		}
	}
}
