package learn

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// The reasons of the Events on a WorkloadPolicy whose canary rollout ends.
const (
	// ReasonCanaryStopped (Warning): a canary pod denied a connection; every pod is back in Monitor.
	ReasonCanaryStopped = "CanaryStopped"
	// ReasonCanaryPassed (Normal): a whole canary window passed without a deny.
	ReasonCanaryPassed = "CanaryPassed"
)

// maxCanaryPods is how many canary pods status.canary.pods may list (its MaxItems).
const maxCanaryPods = 64

// canary runs, on the leader, the rollout that spec.canary asks for while the policy is in Monitor,
// in st: it picks the canary pods (the workload's Ready pods by name, as many as spec.canary says),
// replaces those that went away, and passes the rollout once a whole window went by without a deny
// (a deny stops it where the report lands: CanaryGuard). A change of the spec since the rollout began
// (the rules, spec.canary) starts it again; another mode, or no spec.canary, clears it. It returns how
// long until the rollout should be looked at again, 0 for never. pods are the workload's.
func (p *Promoter) canary(ctx context.Context, wp *v1.WorkloadPolicy, st *v1.WorkloadPolicyStatus, pods []corev1.Pod, now time.Time) time.Duration {
	if st.Mode != policy.Monitor || wp.Spec.Canary == nil {
		st.Canary = nil
		return 0
	}
	c := st.Canary
	if c != nil && c.Generation != wp.Generation {
		c = nil
	}
	if c != nil && c.State == v1.CanaryStopped {
		return 0
	}
	var prev []string
	if c != nil {
		prev = c.Pods
	}
	chosen, err := pickCanaries(wp.Spec.Canary, prev, pods)
	if err != nil {
		k := workload.Key{Namespace: wp.Namespace, Kind: wp.Spec.Workload.Kind, Name: wp.Spec.Workload.Name}
		log.FromContext(ctx).Error(err, "spec.canary; no canary runs", "workload", k.String())
		st.Canary = nil
		return 0
	}
	if len(chosen) == 0 {
		st.Canary = nil // no pod is Ready yet
		return p.opts.Stale
	}
	if c == nil {
		c = &v1.CanaryStatus{State: v1.CanaryRunning, Revision: st.Revision, Since: metav1.NewTime(now), Generation: wp.Generation}
	}
	c.Pods = chosen
	st.Canary = c
	if c.State == v1.CanaryRunning {
		if left := c.Since.Add(p.opts.CanaryWindow).Sub(now); left > 0 {
			return min(left, p.opts.Stale)
		}
		c.State = v1.CanaryPassed
		log.FromContext(ctx).Info("canary passed", "pods", c.Pods, "since", c.Since.Time)
		if p.opts.Events != nil {
			next := "promote it to Protect (spec.mode) when ready"
			if wp.Spec.AutoProtect && p.opts.MonitorQuiet > 0 {
				next = "autoProtect promotes it to Protect"
			}
			p.opts.Events.Eventf(wp, nil, corev1.EventTypeNormal, ReasonCanaryPassed, "Pass",
				"the canary pods %v enforced Protect for %s without a deny; %s", c.Pods, p.opts.CanaryWindow, next)
		}
	}
	// The promoter watches no pods: look again for canaries that went away.
	return p.opts.Stale
}

// pickCanaries returns the canary pods among pods, sorted: those of prev that are still live, then
// Ready pods in name order, as many as spec asks for (a count, or a percentage of the live pods rounded
// up; at least one, at most every live pod and maxCanaryPods).
func pickCanaries(spec *intstr.IntOrString, prev []string, pods []corev1.Pod) ([]string, error) {
	var live []corev1.Pod
	for i := range pods {
		if resolve.Live(&pods[i]) {
			live = append(live, pods[i])
		}
	}
	slices.SortFunc(live, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	n, err := intstr.GetScaledValueFromIntOrPercent(spec, len(live), true)
	if err != nil {
		return nil, err
	}
	n = min(max(n, 1), len(live), maxCanaryPods)
	var out []string
	for _, pod := range live {
		if len(out) < n && slices.Contains(prev, pod.Name) {
			out = append(out, pod.Name)
		}
	}
	for _, pod := range live {
		if len(out) < n && ready(&pod) && !slices.Contains(out, pod.Name) {
			out = append(out, pod.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

func ready(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// CanaryGuard is the policy API's ReportSink in front of another: a report with a deny from one of
// its workload's canary pods (resolve.CanaryPods) stops the rollout at once, on whichever replica the
// report lands. It sets status.canary Stopped with the pod and the flow in its reason, so that every
// replica serves the canaries Monitor again, and records a Warning Event CanaryStopped. Only the
// caller's authenticated pod counts, so a pod cannot stop another workload's rollout, nor its own
// workload's unless it is a canary that denied.
type CanaryGuard struct {
	next   policyapi.ReportSink
	cache  client.Reader // the informer cache: most reports are of no canary
	api    client.Reader // uncached, for read-modify-write
	writer client.Client
	events events.EventRecorder
	log    logr.Logger
}

// NewCanaryGuard returns a guard passing reports on to next; events, when not nil, records the Events.
func NewCanaryGuard(next policyapi.ReportSink, cache, api client.Reader, writer client.Client, events events.EventRecorder, log logr.Logger) *CanaryGuard {
	return &CanaryGuard{next: next, cache: cache, api: api, writer: writer, events: events, log: log}
}

// Accept stops the rollout the report's denies stop, then passes the report on. A report whose stop
// cannot be written is refused, so that the sidecar sends it again, rather than lost.
func (g *CanaryGuard) Accept(ctx context.Context, id policyapi.Identity, r *policy.Report) error {
	if i := slices.IndexFunc(r.Entries, func(e policy.ReportEntry) bool { return e.Verdict == policy.Deny }); i >= 0 {
		if err := g.stop(ctx, id, &r.Entries[i]); err != nil {
			return fmt.Errorf("stop the canary rollout of %s: %w", id.Workload, err)
		}
	}
	return g.next.Accept(ctx, id, r)
}

func (g *CanaryGuard) stop(ctx context.Context, id policyapi.Identity, e *policy.ReportEntry) error {
	name := client.ObjectKey{Namespace: id.Workload.Namespace, Name: workload.PolicyName(id.Workload.Kind, id.Workload.Name)}
	canary := func(wp *v1.WorkloadPolicy) bool {
		return wp.Spec.Workload.Kind == id.Workload.Kind && wp.Spec.Workload.Name == id.Workload.Name &&
			slices.Contains(resolve.CanaryPods(wp), id.Pod.Name)
	}
	var wp v1.WorkloadPolicy
	if err := g.cache.Get(ctx, name, &wp); err != nil || !canary(&wp) {
		return client.IgnoreNotFound(err)
	}
	reason := fmt.Sprintf("canary pod %s denied %s", id.Pod.Name, flowText(e))
	stopped := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		stopped = false
		if err := g.api.Get(ctx, name, &wp); err != nil {
			return err
		}
		if !canary(&wp) {
			return nil // stopped already, or no longer a canary
		}
		wp.Status.Canary.State, wp.Status.Canary.Reason = v1.CanaryStopped, reason
		if err := g.writer.Status().Update(ctx, &wp); err != nil {
			return err
		}
		stopped = true
		return nil
	})
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	if !stopped {
		return nil
	}
	g.log.Info("canary stopped", "workload", id.Workload.String(), "reason", reason)
	if g.events != nil {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: id.Pod.Namespace, Name: id.Pod.Name, UID: id.UID}}
		g.events.Eventf(&wp, pod, corev1.EventTypeWarning, ReasonCanaryStopped, "Stop",
			"%s under Protect; every pod is back in Monitor until the rules or spec.canary change", reason)
	}
	return nil
}

// flowText says which flow a report entry is: "egress TCP to 192.0.2.7 (api.example.com) port 443".
func flowText(e *policy.ReportEntry) string {
	to := "to"
	if e.Direction == policy.Ingress {
		to = "from"
	}
	peer := e.Peer.String()
	if e.Name != "" {
		peer += " (" + e.Name + ")"
	}
	s := fmt.Sprintf("%s %s %s %s", e.Direction, e.Protocol, to, peer)
	if e.Port != 0 {
		s += fmt.Sprintf(" port %d", e.Port)
	}
	return s
}
