package main

import (
	"testing"

	"podwall.io/podwall/sidecar/agent"
)

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
