package main

import (
	"os"

	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
)

// memoryLimit is the agent's soft memory limit: none when GOMEMLIMIT sets one (the operator's word),
// else agent.DefaultMemoryFloor and, in a container with a memory limit, at most 90% of it.
func memoryLimit() agent.MemoryLimit {
	if os.Getenv("GOMEMLIMIT") != "" {
		return agent.MemoryLimit{}
	}
	return agent.MemoryLimit{Floor: agent.DefaultMemoryFloor, Cap: config.SidecarMemoryLimit() / 10 * 9}
}
