package learn

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/version"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// PromoteOptions configure mode promotion; a zero period disables that promotion.
type PromoteOptions struct {
	// LearnQuiet promotes Learn to Monitor once nothing new was learned for this long.
	LearnQuiet time.Duration
	// MonitorQuiet promotes Monitor to Protect, for policies with autoProtect, once no audit was
	// reported for this long.
	MonitorQuiet time.Duration
	// Stale drops a replica's status entry not refreshed for this long (30s): that replica is gone.
	Stale time.Duration
	// Version is policygen's own (version.Version): sidecars of another version count as outdated.
	Version string
	// CanaryWindow is how long the canary pods of a policy with spec.canary enforce Protect without a
	// deny before the rollout passes (1h).
	CanaryWindow time.Duration
	// Clock is the real clock unless a test injects one.
	Clock clock.PassiveClock
	// Events records each promotion and the canary rollouts' Events on their WorkloadPolicy (the
	// manager's recorder); nil records none.
	Events events.EventRecorder
}

// Promote decides a policy's next mode at now from the quiet periods and the evidence, how long until
// it should be looked at again (0: no promotion is pending), and what evidence an automatic promotion
// out of the mode lacks ("" for nothing, or when none applies). The quiet period counts from the later
// of when the mode began and the last learned flow (Learn) or violation (Monitor); the evidence is
// complete coverage and no would-deny flow (missingEvidence). A policy with spec.canary leaves
// Monitor, with autoProtect, once its canary rollout passed (status.canary) and the evidence allows,
// instead of after the quiet period; a zero MonitorQuiet turns that promotion off too.
func Promote(spec *v1.WorkloadPolicySpec, st *v1.WorkloadPolicyStatus, now time.Time, o PromoteOptions) (next policy.Mode, wait time.Duration, blocked string) {
	mode := cmp.Or(spec.Mode, policy.Learn)
	if st.ModeSince == nil {
		return mode, 0, ""
	}
	var quiet time.Duration
	var last *metav1.Time
	switch {
	case mode == policy.Learn && o.LearnQuiet > 0:
		quiet, last, next = o.LearnQuiet, st.LastLearned, policy.Monitor
	case mode == policy.Monitor && spec.AutoProtect && o.MonitorQuiet > 0 && spec.Canary != nil:
		if st.Canary == nil || st.Canary.State != v1.CanaryPassed {
			return mode, 0, ""
		}
		if blocked = missingEvidence(st); blocked != "" {
			return mode, 0, blocked
		}
		return policy.Protect, 0, ""
	case mode == policy.Monitor && spec.AutoProtect && o.MonitorQuiet > 0:
		quiet, last, next = o.MonitorQuiet, st.LastViolation, policy.Protect
	default:
		return mode, 0, ""
	}
	blocked = missingEvidence(st)
	since := st.ModeSince.Time
	if last != nil && last.After(since) {
		since = last.Time
	}
	if left := since.Add(quiet).Sub(now); left > 0 || blocked != "" {
		return mode, max(left, 0), blocked
	}
	return next, 0, ""
}

// Promoter is the leader's reconciler of WorkloadPolicy status and modes: it sums the replicas'
// sidecar counts (by version too, and the outdated ones: of another version than policygen's own),
// drops entries of replicas that are gone, counts rules, measures the window's coverage, and promotes
// modes when the evidence allows, recording an Event.
type Promoter struct {
	client client.Client
	cache  client.Reader
	opts   PromoteOptions
}

// NewPromoter returns a promoter writing through c, finding the workloads' pods in cache (with the
// resolve indexes).
func NewPromoter(c client.Client, cache client.Reader, opts PromoteOptions) *Promoter {
	opts.Stale = cmp.Or(opts.Stale, 30*time.Second)
	opts.Version = cmp.Or(opts.Version, version.Version)
	opts.CanaryWindow = cmp.Or(opts.CanaryWindow, time.Hour)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Promoter{client: c, cache: cache, opts: opts}
}

// SetupWithManager registers the promoter; it runs on the leader only.
func (p *Promoter) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("workloadpolicy-promoter").For(&v1.WorkloadPolicy{}).Complete(p)
}

// Reconcile updates one policy's status and mode.
func (p *Promoter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var wp v1.WorkloadPolicy
	if err := p.client.Get(ctx, req.NamespacedName, &wp); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	now := p.opts.Clock.Now()
	st := wp.Status.DeepCopy()
	p.summarize(&wp, st, now)
	k := workload.Key{Namespace: wp.Namespace, Kind: wp.Spec.Workload.Kind, Name: wp.Spec.Workload.Name}
	pods, err := resolve.WorkloadPods(ctx, p.cache, k)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("pods of %s: %w", k, err)
	}
	canaryWait := p.canary(ctx, &wp, st, pods, now)
	p.cover(&wp, st, pods, now)
	next, wait, blocked := Promote(&wp.Spec, st, now, p.opts)
	st.PromotionBlocked = blocked
	if from := cmp.Or(wp.Spec.Mode, policy.Learn); next != from {
		wp.Spec.Mode = next
		if err := p.client.Update(ctx, &wp); err != nil {
			return reconcile.Result{}, fmt.Errorf("promote to %s: %w", next, err)
		}
		note := evidenceNote(st)
		log.FromContext(ctx).Info("mode promoted", "from", from, "to", next, "since", st.ModeSince.Time, "evidence", note)
		if p.opts.Events != nil {
			p.opts.Events.Eventf(&wp, nil, corev1.EventTypeNormal, ReasonPromoted, "Promote", "%s to %s after %s: %s", from, next, promotedAfter(&wp.Spec, from), note)
		}
		st.Mode, st.ModeSince = next, &metav1.Time{Time: now}
		pods := st.Coverage.Pods // all of them reported: Promote saw the coverage complete
		st.Coverage = nil        // the new mode's window opens now
		measure(st, wp.Generation, observed{pods: pods, reported: pods, full: true}, now)
		wait = 0
	}
	if !equality.Semantic.DeepEqual(st, &wp.Status) {
		wp.Status = *st
		if err := p.client.Status().Update(ctx, &wp); err != nil {
			return reconcile.Result{}, fmt.Errorf("update status: %w", err)
		}
	}
	// Subscribers come and go, and coverage is counted by the hour: look again while either matters.
	if (len(st.Replicas) > 0 || blocked != "") && (wait == 0 || wait > p.opts.Stale) {
		wait = p.opts.Stale
	}
	if canaryWait > 0 && (wait == 0 || wait > canaryWait) {
		wait = canaryWait
	}
	return reconcile.Result{RequeueAfter: wait}, nil
}

// summarize fills the derived status fields.
func (p *Promoter) summarize(wp *v1.WorkloadPolicy, st *v1.WorkloadPolicyStatus, now time.Time) {
	mode := cmp.Or(wp.Spec.Mode, policy.Learn)
	if st.Mode != mode || st.ModeSince == nil {
		st.Mode, st.ModeSince = mode, &metav1.Time{Time: now}
	}
	st.Rules = int32(len(wp.Spec.Ingress) + len(wp.Spec.Egress) + len(wp.Spec.Loopback))
	st.ObservedGeneration = wp.Generation
	st.Sidecars, st.SidecarsInSync, st.Revision, st.OutdatedSidecars, st.WeakenedSidecars = 0, 0, 0, 0, 0
	versions := map[string]int32{}
	fresh := st.Replicas[:0:0]
	for _, r := range st.Replicas {
		if now.Sub(r.Updated.Time) > p.opts.Stale {
			continue
		}
		fresh = append(fresh, r)
		st.Sidecars += r.Sidecars
		st.SidecarsInSync += r.SidecarsInSync
		st.WeakenedSidecars += r.Weakened
		st.Revision = max(st.Revision, r.Revision)
		for _, v := range r.SidecarVersions {
			versions[v.Version] += v.Count
			if v.Version != p.opts.Version {
				st.OutdatedSidecars += v.Count
			}
		}
	}
	st.SidecarVersions = v1.SidecarVersionList(versions)
	if len(fresh) == 0 {
		fresh = nil
	}
	st.Replicas = fresh
}

// promotedAfter says what a promotion out of mode from waited for.
func promotedAfter(spec *v1.WorkloadPolicySpec, from policy.Mode) string {
	if from == policy.Monitor && spec.Canary != nil {
		return "its canary rollout passed"
	}
	return "its quiet period"
}
