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
	fulls := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second}
	seen := make([]map[time.Duration]bool, len(fulls))
	for n := range seen {
		seen[n] = map[time.Duration]bool{}
	}
	for range 200 {
		retry := c.backoff
		for n, full := range fulls {
			d := retry.Step()
			if d < full/2 || d > full {
				t.Fatalf("attempt %d waits %v, want within [%v, %v]", n, d, full/2, full)
			}
			seen[n][d] = true
		}
	}
	for n := range seen {
		if len(seen[n]) < 10 {
			t.Fatalf("attempt %d waited only %d distinct times in 200 draws: not jittered", n, len(seen[n]))
		}
	}
	retry := c.backoff
	for range 1000 {
		retry.Step()
	}
	if d := retry.Step(); d > 30*time.Second || d < 15*time.Second {
		t.Fatalf("attempt 1000 waits %v, want capped at 30s", d)
	}
}

func TestNewRefusesPlainHTTP(t *testing.T) {
	if _, err := New(Options{URL: "http://policygen:9443"}, logr.Discard()); err == nil {
		t.Fatal("a plain-HTTP policygen URL was accepted; the token would travel in the clear")
	}
}
