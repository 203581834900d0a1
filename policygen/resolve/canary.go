package resolve

import (
	"slices"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
)

// CanaryPods are the pods of wp's workload that are served Protect while the policy is in Monitor:
// those status.canary lists while the rollout runs or has passed and spec.canary still asks for one,
// sorted. A stopped rollout, or a policy in another mode, has none.
func CanaryPods(wp *v1alpha1.WorkloadPolicy) []string {
	c := wp.Status.Canary
	if wp.Spec.Mode != policy.Monitor || wp.Spec.Canary == nil || c == nil ||
		(c.State != v1alpha1.CanaryRunning && c.State != v1alpha1.CanaryPassed) || len(c.Pods) == 0 {
		return nil
	}
	pods := slices.Clone(c.Pods)
	slices.Sort(pods)
	return slices.Compact(pods)
}

// canaryOf is the form a canary pod is served: p in Protect, saying it is a canary.
func canaryOf(p *policy.Policy) *policy.Policy {
	cp := *p
	cp.Mode, cp.Canary = policy.Protect, true
	return &cp
}
