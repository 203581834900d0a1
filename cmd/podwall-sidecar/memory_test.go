package main

import (
	"testing"

	"podwall.io/podwall/sidecar/agent"
)

// TestMemoryLimitLeavesGOMEMLIMIT: a limit set in the environment is the operator's; the agent keeps
// none of its own.
func TestMemoryLimitLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "64MiB")
	if m := memoryLimit(); m.Floor != 0 || m.Cap != 0 {
		t.Errorf("with GOMEMLIMIT set, the agent's limit is %+v, want none", m)
	}
	t.Setenv("GOMEMLIMIT", "")
	if m := memoryLimit(); m.Floor != agent.DefaultMemoryFloor {
		t.Errorf("without GOMEMLIMIT, the agent's limit is %+v, want the default floor", m)
	}
}

// TestGCPercentLeavesGOGC: GOGC set in the environment is the operator's; else the agent's default.
func TestGCPercentLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if m := memoryLimit(); m.GCPercent != 0 {
		t.Errorf("with GOGC set, the agent's GC percent is %d, want GOGC's (0)", m.GCPercent)
	}
	t.Setenv("GOGC", "")
	if m := memoryLimit(); m.GCPercent != agent.DefaultGCPercent {
		t.Errorf("without GOGC, the agent's GC percent is %d, want %d", m.GCPercent, agent.DefaultGCPercent)
	}
}
