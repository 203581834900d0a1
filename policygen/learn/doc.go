// Package learn turns what sidecars report into learned rules and promotes workloads through the modes.
// The decisions are pure functions: Merge adds observations to a spec as learned rules, Promote picks a
// policy's next mode. Learner wraps Merge with the cache and the API server, naming the owner of each
// reported address; Promoter runs Promote as the leader's controller, and the canary rollouts of
// spec.canary before it (CanaryGuard stops one where a canary's deny is reported).
package learn
