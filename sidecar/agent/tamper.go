package agent

import (
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/tamper"
)

// restore re-applies the policy in force, in one batch, after a change to the table that the sidecar
// did not make (a process holding CAP_NET_ADMIN in the namespace), and then cuts the connections
// established meanwhile that the policy refuses. The decider did not change, so only the kernel's
// half of Apply is repeated.
func (a *Agent) restore(c tamper.Change) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return // leave sets the namespace's final state
	}
	a.tampered.Inc()
	a.tamperedAt.Store(time.Now().Unix())
	err := a.guard.WriteBatches(func() (int, error) {
		return a.applyRuleset(a.policy, a.tunables, a.rulesetOptions(a.tunables))
	})
	if err != nil {
		a.log.Error(err, "ruleset changed by another process; restoring it failed",
			"generation", c.Generation, "by", c.By, "changes", c.What)
		return
	}
	if modeOf(a.policy.Policy, a.tunables.Mode) == policy.Protect {
		a.revoke()
	}
	a.log.Info("ruleset changed by another process; restored", "revision", a.policy.Revision,
		"generation", c.Generation, "by", c.By, "changes", c.What)
}
