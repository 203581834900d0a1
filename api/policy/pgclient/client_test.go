package pgclient

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestBackoffGrowsJitteredAndBounded: attempt n waits between half and all of min·2ⁿ, capped at max.
func TestBackoffGrowsJitteredAndBounded(t *testing.T) {
	c, err := New(Options{URL: "https://policygen:9443", MinBackoff: time.Second, MaxBackoff: 30 * time.Second}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	for n, full := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := c.backoff(n)
			if d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, full/2, full)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("backoff(%d) took only %d values in 200 draws: not jittered", n, len(seen))
		}
	}
	if d := c.backoff(1000); d > 30*time.Second || d < 15*time.Second {
		t.Fatalf("backoff(1000) = %v, want capped at 30s", d)
	}
}

func TestNewRefusesPlainHTTP(t *testing.T) {
	if _, err := New(Options{URL: "http://policygen:9443"}, logr.Discard()); err == nil {
		t.Fatal("a plain-HTTP policygen URL was accepted; the token would travel in the clear")
	}
}
