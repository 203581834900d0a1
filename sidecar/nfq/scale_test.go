package nfq

import (
	"testing"
	"time"
)

func TestScalerGrowsUnderLoad(t *testing.T) {
	tests := []struct {
		name string
		n    int
		s    sample
		want int
	}{
		{"more waiting than workers doubles", 2, sample{backlog: 3, peak: 2}, 4},
		{"doubling stops at max", 5, sample{backlog: 40, peak: 5}, 8},
		{"a long wait adds one", 2, sample{wait: 2 * growWait, peak: 2}, 3},
		{"a short wait holds", 2, sample{wait: growWait / 2, peak: 2}, 2},
		{"a backlog the workers outnumber holds", 3, sample{backlog: 2, peak: 1}, 3},
		{"at max, a long wait holds", 8, sample{wait: time.Second, backlog: 100, peak: 8}, 8},
		{"under min is raised to it", 0, sample{}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := scaler{min: 1, max: 8}
			if got := c.next(tc.n, tc.s); got != tc.want {
				t.Errorf("next(%d, %+v) = %d, want %d", tc.n, tc.s, got, tc.want)
			}
		})
	}
}

// TestScalerShrinksWhenIdle checks that the pool loses one worker per shrinkAfter of spare capacity,
// down to min and no further, and that any busy interval restarts the count.
func TestScalerShrinksWhenIdle(t *testing.T) {
	per := int(shrinkAfter / scaleInterval)
	c := scaler{min: 2, max: 8}
	n := 4
	idle := sample{peak: 1}
	for i := range per - 1 {
		if n = c.next(n, idle); n != 4 {
			t.Fatalf("after %d idle intervals the pool is %d, want 4 until %v", i+1, n, shrinkAfter)
		}
	}
	// All workers busy at once: the count starts over.
	if n = c.next(n, sample{peak: 4}); n != 4 {
		t.Fatalf("a busy interval changed the pool to %d", n)
	}
	for range per - 1 {
		n = c.next(n, idle)
	}
	if n != 4 {
		t.Fatalf("pool %d after a busy interval and %d idle ones, want 4", n, per-1)
	}
	if n = c.next(n, idle); n != 3 {
		t.Fatalf("pool %d after %v idle, want 3", n, shrinkAfter)
	}
	for range 3 * per {
		n = c.next(n, sample{})
	}
	if n != 2 {
		t.Fatalf("pool %d after a long idle time, want the minimum 2", n)
	}
}
