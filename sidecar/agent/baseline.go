package agent

import (
	"crypto/sha256"
	"fmt"

	"podwall.io/podwall/api/policy"
)

// InstallBaseline applies the ruleset a starting sidecar begins with (the policy file's or the cached
// policy, else the fail mode's baseline) in its offline form, with no queue rules, and returns: what
// the injector's init container does on clusters without native sidecars, so that the pod's other
// containers start guarded before the sidecar container is up.
func (a *Agent) InstallBaseline() error {
	e, _, cache := a.initialPolicy()
	cache.discard() // the sidecar container writes it, once its policy is in force
	o := a.rulesetOptions(a.tunables)
	o.Offline = true
	o.SelfPorts = nil // no sidecar holds its port yet: an app that bound it would receive what it likes
	if _, err := a.applyRuleset(e, a.tunables, o); err != nil {
		return fmt.Errorf("install baseline: %w", err)
	}
	a.log.Info("baseline installed", "revision", e.Revision)
	return nil
}

// initialPolicy picks what to enforce before anything else is known: the policy file in standalone
// mode (it is the operator's word), else the cached policy, else the fail mode's baseline. For the
// policy file, it returns the hash of the content it read, so that the file watcher knows what is
// already in force, and the cache of it to commit once it is.
func (a *Agent) initialPolicy() (*enforced, [sha256.Size]byte, *pendingCache) {
	if a.opts.PolicyFile != "" {
		cache := a.newCache()
		out := newCopies(cache)
		e, err := a.readPolicyFile(a.opts.PolicyFile, out)
		if err == nil {
			return e, out.hash(), cache
		}
		cache.discard()
		a.log.Error(err, "policy file unusable; trying the cache, then the fail mode's baseline", "file", a.opts.PolicyFile)
	}
	if e, err := a.loadCache(); err != nil {
		a.log.Error(err, "ignoring the policy cache")
	} else if e != nil {
		a.log.Info("re-applying the cached policy", "revision", e.Revision)
		return e, [sha256.Size]byte{}, nil
	}
	e, err := a.compile(baseline(a.opts.FailOpen, a.tunables.Mode))
	if err != nil {
		panic("agent: the baseline does not compile: " + err.Error()) // a constant policy
	}
	return e, [sha256.Size]byte{}, nil
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
