package agent

import "testing"

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
