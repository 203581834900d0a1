package config

import (
	"testing"
	"testing/fstest"
)

func TestCgroupCPULimit(t *testing.T) {
	const self = "0::/kubepods/pod1/ctr\n"
	fsys := func(files map[string]string) fstest.MapFS {
		m := fstest.MapFS{}
		for name, data := range files {
			m[name] = &fstest.MapFile{Data: []byte(data)}
		}
		return m
	}
	tests := []struct {
		name   string
		self   string
		files  map[string]string
		want   float64
		wantOK bool
	}{
		{"own limit", self, map[string]string{"kubepods/pod1/ctr/cpu.max": "150000 100000\n"}, 1.5, true},
		{"no limit", self, map[string]string{"kubepods/pod1/ctr/cpu.max": "max 100000\n"}, 0, false},
		{"the pod's limit above an unlimited container", self, map[string]string{
			"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "50000 100000\n"}, 0.5, true},
		{"the lowest along the path", self, map[string]string{
			"kubepods/pod1/ctr/cpu.max": "300000 100000\n", "kubepods/cpu.max": "200000 100000\n"}, 2, true},
		{"a container's cgroup namespace: its own cgroup at the mount's root", "0::/\n",
			map[string]string{"cpu.max": "25000 50000\n"}, 0.5, true},
		{"cgroup v1", "4:memory:/x\n1:cpu:/\n", map[string]string{"cpu.max": "100000 100000\n"}, 0, false},
		{"no cpu.max", self, nil, 0, false},
		{"garbage", self, map[string]string{"kubepods/pod1/ctr/cpu.max": "lots 100000\n", "cpu.max": "1 0\n"}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := cgroupCPULimit(fsys(tc.files), []byte(tc.self))
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("cgroupCPULimit = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestAutoMaxWorkers(t *testing.T) {
	for _, tc := range []struct {
		cpus float64
		want int
	}{{0.1, 1}, {0.5, 1}, {1, 2}, {1.5, 3}, {2, 4}, {4, 8}, {64, 8}} {
		if got := autoMaxWorkers(tc.cpus); got != tc.want {
			t.Errorf("autoMaxWorkers(%v) = %d, want %d", tc.cpus, got, tc.want)
		}
	}
}

func TestParseMemoryMax(t *testing.T) {
	for content, want := range map[string]float64{
		"201326592\n":           201326592, // cgroup v2, 192Mi
		"max\n":                 0,         // cgroup v2, no limit
		"9223372036854771712\n": 0,         // cgroup v1, no limit
		"":                      0,
	} {
		if got, ok := parseMemoryMax([]byte(content)); got != want || ok != (want != 0) {
			t.Errorf("parseMemoryMax(%q) = %v, %v; want %v", content, got, ok, want)
		}
	}
}

// TestCgroupMemoryLimit: the memory limit is found as the CPU limit is, the lowest along the path.
func TestCgroupMemoryLimit(t *testing.T) {
	fsys := fstest.MapFS{
		"kubepods/pod1/ctr/memory.max": {Data: []byte("max\n")},
		"kubepods/pod1/memory.max":     {Data: []byte("201326592\n")},
		"kubepods/memory.max":          {Data: []byte("402653184\n")},
	}
	if got, ok := cgroupLimit(fsys, []byte("0::/kubepods/pod1/ctr\n"), "memory.max", parseMemoryMax); got != 201326592 || !ok {
		t.Errorf("cgroupLimit(memory.max) = %v, %v; want the pod's 201326592", got, ok)
	}
}
