package agent

import (
	"fmt"
	"os"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/ruleset"
)

// InstallBaseline applies the ruleset a starting sidecar begins with (the policy file's or the cached
// policy, else the fail mode's baseline) in its offline form, with no queue rules, and returns: what
// the injector's init container does on clusters without native sidecars, so that the pod's other
// containers start guarded before the sidecar container is up.
func (a *Agent) InstallBaseline() error {
	p, _ := a.initialPolicy()
	o := a.rulesetOptions(a.tunables)
	o.Offline = true
	o.SelfPorts = nil // no sidecar holds its port yet: an app that bound it would receive what it likes
	if err := ruleset.Apply(a.nft, withMode(p, a.tunables.Mode), o); err != nil {
		return fmt.Errorf("install baseline: %w", err)
	}
	a.log.Info("baseline installed", "revision", p.Revision)
	return nil
}

// initialPolicy picks what to enforce before anything else is known: the policy file in standalone
// mode (it is the operator's word), else the cached policy, else the fail mode's baseline. It returns
// the file content it applied, so that the file watcher knows what is already in force.
func (a *Agent) initialPolicy() (*policy.Policy, []byte) {
	if a.opts.PolicyFile != "" {
		data, err := os.ReadFile(a.opts.PolicyFile)
		if err == nil {
			var p *policy.Policy
			if p, err = policy.Decode(data); err == nil {
				return p, data
			}
		}
		a.log.Error(err, "policy file unusable; trying the cache, then the fail mode's baseline", "file", a.opts.PolicyFile)
	}
	if p, err := loadCache(a.opts.CacheDir); err != nil {
		a.log.Error(err, "ignoring the policy cache")
	} else if p != nil {
		a.log.Info("re-applying the cached policy", "revision", p.Revision)
		return p, nil
	}
	return baseline(a.opts.FailOpen, a.tunables.Mode), nil
}

var (
	denyAll  = &policy.Policy{Mode: policy.Protect}
	auditAll = &policy.Policy{Mode: policy.Monitor}
)

// baseline is what a pod that has never had a policy runs: deny-all in Protect or when failing closed,
// else allow-all with every connection logged as an audit.
func baseline(failOpen bool, floor policy.Mode) *policy.Policy {
	if failOpen && floor != policy.Protect {
		return auditAll
	}
	return denyAll
}
