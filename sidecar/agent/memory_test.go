package agent

import (
	"runtime/debug"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		m          MemoryLimit
		live, want int64
	}{
		{MemoryLimit{Floor: 24 << 20}, 5 << 20, 24 << 20},                 // idle: the floor
		{MemoryLimit{Floor: 24 << 20}, 40 << 20, 80 << 20},                // a large policy: twice its live heap
		{MemoryLimit{Floor: 24 << 20, Cap: 60 << 20}, 40 << 20, 60 << 20}, // but never past the cap
		{MemoryLimit{Floor: 24 << 20, Cap: 16 << 20}, 0, 16 << 20},        // a small container: its limit rules
	} {
		if got := tc.m.limit(tc.live); got != tc.want {
			t.Errorf("%+v.limit(%d) = %d, want %d", tc.m, tc.live, got, tc.want)
		}
	}
}

// TestPauseGC: with a memory limit kept, the collector is off from pauseGC until resume, which puts
// back the percentage it found, once; without one, the collector is left alone.
func TestPauseGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(77))
	resume := (&Agent{opts: Options{Memory: MemoryLimit{Floor: DefaultMemoryFloor}}}).pauseGC()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("GC percent %d while paused, want -1 (off)", p)
	}
	resume()
	if p := debug.SetGCPercent(50); p != 77 {
		t.Fatalf("GC percent %d after resume, want 77 back", p)
	}
	resume() // a second resume changes nothing
	if p := debug.SetGCPercent(77); p != 50 {
		t.Fatalf("GC percent %d after a second resume, want 50", p)
	}
	(&Agent{}).pauseGC()
	if p := debug.SetGCPercent(77); p != 77 {
		t.Fatalf("GC percent %d with no memory limit kept, want 77 untouched", p)
	}
}

// TestPauseGCResumesAtGCPercent: with MemoryLimit.GCPercent the collector resumes at it, paused or not.
func TestPauseGCResumesAtGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(77))
	resume := (&Agent{opts: Options{Memory: MemoryLimit{Floor: DefaultMemoryFloor, GCPercent: DefaultGCPercent}}}).pauseGC()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("GC percent %d while paused, want -1 (off)", p)
	}
	resume()
	if p := debug.SetGCPercent(77); p != DefaultGCPercent {
		t.Fatalf("GC percent %d after resume, want %d", p, DefaultGCPercent)
	}
	(&Agent{opts: Options{Memory: MemoryLimit{GCPercent: DefaultGCPercent}}}).pauseGC()
	if p := debug.SetGCPercent(77); p != DefaultGCPercent {
		t.Fatalf("GC percent %d without a memory limit, want %d at once", p, DefaultGCPercent)
	}
}
