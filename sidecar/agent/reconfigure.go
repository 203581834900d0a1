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
		if err := a.applyLocked(a.policy, t, nil); err != nil {
			return err
		}
	}
	a.tunables = t
	return nil
}

// relabel gives the verdict log a new identity (see identity); the log's options stay.
func (a *Agent) relabel(id verdictlog.Identity) {
	vlog, err := verdictlog.New(a.opts.Stdout, id, a.tunables.Log)
	if err != nil {
		a.log.Error(err, "verdict lines keep naming the workload the injector gave", "workload", id.Workload)
		return
	}
	a.retireLogger(a.vlog.Swap(vlog))
	a.log.Info("verdict lines name the workload policygen serves", "workload", id.Workload)
}

func logChanged(a, b verdictlog.Options) bool {
	return a.Allows != b.Allows || a.FirstInterval != b.FirstInterval || a.Rate != b.Rate ||
		a.Burst != b.Burst || a.BufferBytes != b.BufferBytes
}
