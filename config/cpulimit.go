package config

import (
	"io/fs"
	"math"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
)

// maxAutoWorkers caps verdict-max-workers 0 (two per CPU): past a few workers, a sidecar that shares
// the pod's CPU limit only has them wait their turn for it.
const maxAutoWorkers = 8

// maxWorkers is the most verdict-max-workers may say.
const maxWorkers = 64

// autoMaxWorkers is verdict-max-workers 0 for a sidecar that may use cpus CPUs: two workers per CPU,
// rounded up, at most maxAutoWorkers.
func autoMaxWorkers(cpus float64) int {
	return min(max(int(math.Ceil(2*cpus)), 1), maxAutoWorkers)
}

// sidecarCPUs is how many CPUs the sidecar may use: the CPU limit of its cgroup (cgroup v2), else
// GOMAXPROCS.
func sidecarCPUs() float64 {
	if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if cpus, ok := cgroupCPULimit(os.DirFS("/sys/fs/cgroup"), self); ok {
			return cpus
		}
	}
	return float64(runtime.GOMAXPROCS(0))
}

// cgroupCPULimit is the CPU limit, in CPUs, that cgroup v2 sets for the process whose /proc/self/cgroup
// reads self (see cgroupLimit); ok is false when no cpu.max sets one.
func cgroupCPULimit(cgroupfs fs.FS, self []byte) (cpus float64, ok bool) {
	return cgroupLimit(cgroupfs, self, "cpu.max", parseCPUMax)
}

// SidecarMemoryLimit is the memory limit of the sidecar's cgroup, in bytes: cgroup v2's (see
// cgroupLimit), else cgroup v1's memory.limit_in_bytes; 0 when none is set.
func SidecarMemoryLimit() int64 {
	if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if b, ok := cgroupLimit(os.DirFS("/sys/fs/cgroup"), self, "memory.max", parseMemoryMax); ok {
			return int64(b)
		}
	}
	if data, err := os.ReadFile("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		if b, ok := parseMemoryMax(data); ok {
			return int64(b)
		}
	}
	return 0
}

// cgroupLimit is the lowest limit that the cgroup v2 files called name, read by parse, set for the
// process whose /proc/self/cgroup reads self: from the process's cgroup up to the root of cgroupfs
// (the cgroup v2 mount: in a container, the container's own cgroup). ok is false when no such file
// sets a limit, or self names no cgroup v2 path (cgroup v1).
func cgroupLimit(cgroupfs fs.FS, self []byte, name string, parse func([]byte) (float64, bool)) (limit float64, ok bool) {
	dir, found := "", false
	for line := range strings.Lines(string(self)) {
		if p, v2 := strings.CutPrefix(strings.TrimSpace(line), "0::"); v2 {
			dir, found = strings.Trim(path.Clean(p), "/"), true
		}
	}
	if !found {
		return 0, false
	}
	for {
		if data, err := fs.ReadFile(cgroupfs, path.Join(dir, name)); err == nil {
			if l, limited := parse(data); limited && (!ok || l < limit) {
				limit, ok = l, true
			}
		}
		if dir == "" {
			return limit, ok
		}
		if dir = path.Dir(dir); dir == "." {
			dir = ""
		}
	}
}

// parseMemoryMax reads a memory limit file: bytes, where cgroup v2's "max" and cgroup v1's
// page-rounded largest value mean no limit.
func parseMemoryMax(data []byte) (float64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return float64(n), true
}

// parseCPUMax reads a cpu.max file, "<quota> <period>" in µs, where the quota "max" means no limit.
func parseCPUMax(data []byte) (float64, bool) {
	f := strings.Fields(string(data))
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	quota, err1 := strconv.ParseUint(f[0], 10, 64)
	period, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || quota == 0 || period == 0 {
		return 0, false
	}
	return float64(quota) / float64(period), true
}
