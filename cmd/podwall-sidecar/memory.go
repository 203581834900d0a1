package main

import (
	"os"
	"strconv"
	"strings"

	"podwall.io/podwall/sidecar/agent"
)

// cgroupMemoryFiles hold the container's memory limit: cgroup v2's, then v1's.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit is the agent's soft memory limit: none when GOMEMLIMIT sets one (the operator's word),
// else agent.DefaultMemoryFloor and, in a container with a memory limit, at most 90% of it.
func memoryLimit() agent.MemoryLimit {
	if os.Getenv("GOMEMLIMIT") != "" {
		return agent.MemoryLimit{}
	}
	m := agent.MemoryLimit{Floor: agent.DefaultMemoryFloor}
	for _, f := range cgroupMemoryFiles {
		if data, err := os.ReadFile(f); err == nil {
			m.Cap = containerLimit(string(data)) / 10 * 9
			break
		}
	}
	return m
}

// containerLimit reads a cgroup memory limit file: 0 for none ("max", or v1's page-rounded
// largest value).
func containerLimit(content string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(content), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
