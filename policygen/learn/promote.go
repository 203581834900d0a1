package learn

import (
	"cmp"
	"context"
	"fmt"
	"time"

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
	// Events records the Events of canary rollouts (the manager's recorder); nil records none.
	Events events.EventRecorder
	// Clock is the real clock unless a test injects one.
	Clock clock.PassiveClock
}

// Promote decides a policy's next mode at now from the quiet periods, and how long until it should be
// looked at again (0: no promotion is pending). The quiet period counts from the later of when the
// mode began and the last learned flow (Learn) or violation (Monitor). A policy with spec.canary
// leaves Monitor, with autoProtect, once its canary rollout passed instead (status.canary); a zero
// MonitorQuiet turns that promotion off too.
func Promote(spec *v1.WorkloadPolicySpec, st *v1.WorkloadPolicyStatus, now time.Time, o PromoteOptions) (policy.Mode, time.Duration) {
	mode := cmp.Or(spec.Mode, policy.Learn)
	if st.ModeSince == nil {
		return mode, 0
	}
	var quiet time.Duration
	var last *metav1.Time
	var next policy.Mode
	switch {
	case mode == policy.Learn && o.LearnQuiet > 0:
		quiet, last, next = o.LearnQuiet, st.LastLearned, policy.Monitor
	case mode == policy.Monitor && spec.AutoProtect && o.MonitorQuiet > 0 && spec.Canary != nil:
		if st.Canary != nil && st.Canary.State == v1.CanaryPassed {
			return policy.Protect, 0
		}
		return mode, 0
	case mode == policy.Monitor && spec.AutoProtect && o.MonitorQuiet > 0:
		quiet, last, next = o.MonitorQuiet, st.LastViolation, policy.Protect
	default:
		return mode, 0
	}
	since := st.ModeSince.Time
	if last != nil && last.After(since) {
		since = last.Time
	}
	if wait := since.Add(quiet).Sub(now); wait > 0 {
		return mode, wait
	}
	return next, 0
}

// Promoter is the leader's reconciler of WorkloadPolicy status and modes: it sums the replicas'
// sidecar counts (by version too, and the outdated ones: of another version than policygen's own),
// drops entries of replicas that are gone, counts rules, and promotes modes.
type Promoter struct {
	client client.Client
	opts   PromoteOptions
}

// NewPromoter returns a promoter writing through c.
func NewPromoter(c client.Client, opts PromoteOptions) *Promoter {
	opts.Stale = cmp.Or(opts.Stale, 30*time.Second)
	opts.Version = cmp.Or(opts.Version, version.Version)
	opts.CanaryWindow = cmp.Or(opts.CanaryWindow, time.Hour)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Promoter{client: c, opts: opts}
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
	canaryWait := p.canary(ctx, &wp, st, now)
	next, wait := Promote(&wp.Spec, st, now, p.opts)
	if next != cmp.Or(wp.Spec.Mode, policy.Learn) {
		wp.Spec.Mode = next
		if err := p.client.Update(ctx, &wp); err != nil {
			return reconcile.Result{}, fmt.Errorf("promote to %s: %w", next, err)
		}
		log.FromContext(ctx).Info("mode promoted", "from", st.Mode, "to", next, "since", st.ModeSince.Time)
		st.Mode, st.ModeSince = next, &metav1.Time{Time: now}
		wait = 0
	}
	if !equality.Semantic.DeepEqual(st, &wp.Status) {
		wp.Status = *st
		if err := p.client.Status().Update(ctx, &wp); err != nil {
			return reconcile.Result{}, fmt.Errorf("update status: %w", err)
		}
	}
	if len(st.Replicas) > 0 && (wait == 0 || wait > p.opts.Stale) {
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
	st.Sidecars, st.SidecarsInSync, st.Revision, st.OutdatedSidecars = 0, 0, 0, 0
	versions := map[string]int32{}
	fresh := st.Replicas[:0:0]
	for _, r := range st.Replicas {
		if now.Sub(r.Updated.Time) > p.opts.Stale {
			continue
		}
		fresh = append(fresh, r)
		st.Sidecars += r.Sidecars
		st.SidecarsInSync += r.SidecarsInSync
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
