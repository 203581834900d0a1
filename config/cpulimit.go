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
// reads self: the lowest quota/period of the cpu.max files from the process's cgroup up to the root of
// cgroupfs (the cgroup v2 mount: in a container, the container's own cgroup). ok is false when no
// cpu.max sets a limit, or self names no cgroup v2 path (cgroup v1).
func cgroupCPULimit(cgroupfs fs.FS, self []byte) (cpus float64, ok bool) {
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
		if data, err := fs.ReadFile(cgroupfs, path.Join(dir, "cpu.max")); err == nil {
			if c, limited := parseCPUMax(data); limited && (!ok || c < cpus) {
				cpus, ok = c, true
			}
		}
		if dir == "" {
			return cpus, ok
		}
		if dir = path.Dir(dir); dir == "." {
			dir = ""
		}
	}
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
