package agent

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultMemoryFloor is MemoryLimit.Floor's usual value. A sidecar idles at a few MiB of Go memory,
// and compiling a policy of 100k peers holds some 13 MiB at its peak, which GOGC's default would let
// grow to twice that with the garbage its decoding makes; under 20 MiB the sidecar peaks at some
// 34 MiB of resident memory in all instead of 44 (32 MiB under 16, 37 under 24: bench/datapath).
const DefaultMemoryFloor = 20 << 20

// MemoryLimit has the agent keep the Go runtime's soft memory limit (runtime/debug.SetMemoryLimit) in
// step with the policy it enforces: after each policy applied, twice the live heap, at least Floor
// and at most Cap. The heap grows to twice the live heap in any case (GOGC=100), so the limit only
// makes the GC work harder while a policy is read and compiled, whose garbage would otherwise double
// the sidecar's peak; a policy far larger than the last one is compiled under the old limit, more
// slowly, and raises it once applied. The zero MemoryLimit leaves the limit alone (GOMEMLIMIT).
type MemoryLimit struct {
	// Floor is the least limit; 0 turns the limit off.
	Floor int64
	// Cap, when not 0, is the most: part of the container's memory limit, so that the GC works
	// harder before the kernel kills the container for its memory.
	Cap int64
	// GCPercent, when not 0, is the collector's target (debug.SetGCPercent, as GOGC) once the agent
	// has started; 0 leaves GOGC's.
	GCPercent int
}

// DefaultGCPercent is MemoryLimit.GCPercent's usual value. An idle sidecar's live heap is about
// 1 MiB, and the runtime lets the heap grow to at least 4 MiB × GOGC/100 between collections: at
// GOGC's default of 100 that, not what the sidecar holds, sets most of its anonymous memory, and it is
// the same in every pod of the node. At 25 the heap grows by a quarter of the live heap, at least 1 MiB,
// and the collector runs four times as often for the same allocation (BENCHMARKS.md measures both,
// GOGC=100 set in the environment of make bench-datapath and make bench-peers for the other).
const DefaultGCPercent = 25

// limit is the soft memory limit for a live heap of live bytes.
func (m MemoryLimit) limit(live int64) int64 {
	l := max(m.Floor, 2*live)
	if m.Cap > 0 {
		l = min(l, m.Cap)
	}
	return l
}

// settleMemory follows a policy applied: it sets the memory limit from the live heap.
func (a *Agent) settleMemory() {
	if a.opts.Memory.Floor != 0 {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		debug.SetMemoryLimit(a.opts.Memory.limit(int64(s[0].Value.Uint64())))
	}
}

// pauseGC turns the collector off while the agent starts, when it keeps a memory limit (which still
// bounds the heap: a large policy is compiled under it as before), and returns what turns it back on,
// at MemoryLimit.GCPercent or else the percentage it found. Starting makes its garbage once and hands
// it back once (debug.FreeOSMemory in Run): a collection before that one would only add a cycle whose
// span lists the runtime keeps for good, some 0.3 MiB of an idle sidecar's memory (bench/datapath
// TestRSS). Without a memory limit the collector is not paused, only set to GCPercent.
func (a *Agent) pauseGC() (resume func()) {
	percent := a.opts.Memory.GCPercent
	if a.opts.Memory.Floor == 0 {
		if percent != 0 {
			debug.SetGCPercent(percent)
		}
		return func() {}
	}
	if found := debug.SetGCPercent(-1); percent == 0 {
		percent = found
	}
	return sync.OnceFunc(func() { debug.SetGCPercent(percent) })
}
