package main

import (
	"os"

	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
)

// memoryLimit is how the agent keeps the Go runtime's memory: its soft memory limit, none when
// GOMEMLIMIT sets one (the operator's word), else agent.DefaultMemoryFloor and, in a container with a
// memory limit, at most 90% of it; and the collector's target, GOGC's when set, else
// agent.DefaultGCPercent.
func memoryLimit() agent.MemoryLimit {
	var m agent.MemoryLimit
	if os.Getenv("GOGC") == "" {
		m.GCPercent = agent.DefaultGCPercent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		m.Floor, m.Cap = agent.DefaultMemoryFloor, config.SidecarMemoryLimit()/10*9
	}
	return m
}
