// Package learn turns what sidecars report into learned rules and promotes workloads through the modes.
// The decisions are pure functions: Merge adds observations to a spec as learned rules (many
// workloads of one other namespace collapse into that namespace, Collapse), Promote picks a policy's
// next mode. Learner wraps Merge with the cache and the API server, naming the owner of each reported
// address, and gathers the promotion evidence (the flows reported, those Protect would deny); Promoter
// runs Promote as the leader's controller, measuring the window's coverage, and promotes only with
// complete coverage and no would-deny flow; it runs the canary rollouts of spec.canary before it
// (CanaryGuard stops one where a canary's deny is reported).
package learn
