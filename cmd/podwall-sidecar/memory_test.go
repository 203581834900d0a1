package main

import (
	"testing"

	"podwall.io/podwall/sidecar/agent"
)

func TestContainerLimit(t *testing.T) {
	for content, want := range map[string]int64{
		"201326592\n":           201326592, // cgroup v2, 192Mi
		"max\n":                 0,         // cgroup v2, no limit
		"9223372036854771712\n": 0,         // cgroup v1, no limit
		"":                      0,
	} {
		if got := containerLimit(content); got != want {
			t.Errorf("containerLimit(%q) = %d, want %d", content, got, want)
		}
	}
}

// TestMemoryLimitLeavesGOMEMLIMIT: a limit set in the environment is the operator's; the agent keeps
// none of its own.
func TestMemoryLimitLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "64MiB")
	if m := memoryLimit(); m != (agent.MemoryLimit{}) {
		t.Errorf("with GOMEMLIMIT set, the agent's limit is %+v, want none", m)
	}
	t.Setenv("GOMEMLIMIT", "")
	if m := memoryLimit(); m.Floor != agent.DefaultMemoryFloor {
		t.Errorf("without GOMEMLIMIT, the agent's limit is %+v, want the default floor", m)
	}
}
