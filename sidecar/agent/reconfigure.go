package agent

import (
	"fmt"

	"podwall.io/podwall/sidecar/verdictlog"
)

// Reconfigure takes new tunables: a new verdict log, and the ruleset again if the mode or the seen
// interval changed. Invalid tunables leave the old ones in force.
func (a *Agent) Reconfigure(t Tunables) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if logChanged(t.Log, a.tunables.Log) {
		vlog, err := verdictlog.New(a.opts.Stdout, a.identity(), t.Log)
		if err != nil {
			return fmt.Errorf("verdict log: %w", err)
		}
		old := a.vlog.Swap(vlog)
		a.retireLogger(old)
	}
	if t.Mode != a.tunables.Mode || t.Log.FirstInterval != a.tunables.Log.FirstInterval || t.Log.Allows != a.tunables.Log.Allows {
		if err := a.applyLocked(a.policy, t); err != nil {
			return err
		}
	}
	a.tunables = t
	return nil
}

func logChanged(a, b verdictlog.Options) bool {
	return a.Allows != b.Allows || a.FirstInterval != b.FirstInterval || a.Rate != b.Rate ||
		a.Burst != b.Burst || a.BufferBytes != b.BufferBytes
}
