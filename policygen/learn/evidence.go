package learn

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/workload"
)

// maxPendingDenies bounds the distinct would-deny flows held per workload between flushes; those
// beyond it are counted, unnamed.
const maxPendingDenies = 256

// MaxWouldDeny bounds status.wouldDeny.
const MaxWouldDeny = 32

// countEvery is how long connections alone (no would-deny flow) wait before they are added to
// status.coverage.flows: a count is not worth a status write per workload every flush.
const countEvery = time.Minute

// ReasonPromoted is the reason of the Event recorded on a WorkloadPolicy at each automatic promotion.
const ReasonPromoted = "Promoted"

// evidence gathers, between the learner's flushes, what each workload's reports add to the promotion
// evidence, and writes it into the policies' status. The evidence an automatic promotion waits for,
// besides its quiet period: every pod of the workload reported through the window (status.coverage),
// and no flow of the window that Protect would refuse (status.wouldDeny). The window is the current
// mode's, restarted when the policy's revision changes. Every replica's learner adds what its reports
// show (flows counted, would-deny flows); the leader's promoter measures the coverage (measure),
// restarts the window and drops what fell out of it.
type evidence struct {
	writer client.Client
	api    client.Reader
	clock  clock.PassiveClock
	log    logr.Logger

	mu      sync.Mutex
	pending map[workload.Key]*sighting
}

// sighting is what a workload's reports showed since the last flush.
type sighting struct {
	first time.Time // when the earliest of these reports came
	flows int64     // connections reported
	deny  map[flowKey]*v1.FlowSummary
	more  int32 // would-deny flows beyond maxPendingDenies
}

// flowKey is a would-deny flow and the revision its sidecar ran.
type flowKey struct {
	revision int64
	dir      policy.Direction
	peer     string
	proto    policy.Protocol
	port     int32
}

func newEvidence(writer client.Client, api client.Reader, clk clock.PassiveClock, log logr.Logger) *evidence {
	return &evidence{writer: writer, api: api, clock: clk, log: log, pending: map[workload.Key]*sighting{}}
}

// observe adds a report that came at now: its connections, and its entries audited or denied, which
// are the flows Protect would refuse under the revision the sidecar ran. peers are its entries' peers
// as the learner identified them (the zero Peer for loopback).
func (e *evidence) observe(id policyapi.Identity, r *policy.Report, peers []v1.Peer, now time.Time) {
	var flows int64
	denied := map[flowKey]*v1.FlowSummary{}
	for i, en := range r.Entries {
		flows += int64(en.Count)
		if en.Verdict != policy.Audit && en.Verdict != policy.Deny {
			continue
		}
		k := flowKey{r.Revision, en.Direction, peerName(peers[i], id.Workload.Namespace, en.Peer), en.Protocol, int32(en.Port)}
		if f := denied[k]; f != nil {
			f.Count += int64(en.Count)
			continue
		}
		denied[k] = &v1.FlowSummary{Direction: en.Direction, Peer: k.peer, Address: en.Peer.String(), Protocol: en.Protocol,
			Port: k.port, Count: int64(en.Count), LastSeen: metav1.NewTime(now)}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.pending[id.Workload]
	if s == nil {
		s = &sighting{first: now, deny: map[flowKey]*v1.FlowSummary{}}
		e.pending[id.Workload] = s
	}
	s.add(flows, denied)
}

func (s *sighting) add(flows int64, denied map[flowKey]*v1.FlowSummary) {
	s.flows += flows
	for k, f := range denied {
		held := s.deny[k]
		switch {
		case held != nil:
			held.Count += f.Count
			held.LastSeen = maxTime(held.LastSeen, f.LastSeen)
		case len(s.deny) < maxPendingDenies:
			s.deny[k] = f
		default:
			s.more++
		}
	}
}

// peerName names a reported peer as a policy names peers (FlowSummary.Peer), from the peer identify
// gave it in namespace ns (the reporter's): the workload, Service or nodes holding the address, else
// the DNS name the pod resolved it from, else the address.
func peerName(p v1.Peer, ns string, addr netip.Addr) string {
	switch {
	case p.Workload != nil:
		return "workload:" + workload.Key{Namespace: cmp.Or(p.Workload.Namespace, ns), Kind: p.Workload.Kind, Name: p.Workload.Name}.String()
	case p.Service != nil:
		return "service:" + cmp.Or(p.Service.Namespace, ns) + "/" + p.Service.Name
	case p.Nodes:
		return "nodes"
	case p.FQDN != "":
		return policy.NamePeer(p.FQDN)
	}
	return "cidr:" + netip.PrefixFrom(addr, addr.BitLen()).String()
}

// flush writes what is due into the policies' status (would-deny flows at once, connections alone
// every countEvery); what is not due or fails to write is kept for the next flush.
func (e *evidence) flush(ctx context.Context) {
	e.mu.Lock()
	todo := e.pending
	e.pending = map[workload.Key]*sighting{}
	e.mu.Unlock()
	now := e.clock.Now()
	for k, s := range todo {
		if !s.due(now) {
			e.requeue(k, s)
			continue
		}
		if err := e.write(ctx, k, s); err != nil {
			e.log.Error(err, "write promotion evidence", "workload", k.String())
			e.requeue(k, s)
		}
	}
}

// due says the sighting is worth a status write at now: it holds a would-deny flow, or connections
// counted for countEvery.
func (s *sighting) due(now time.Time) bool {
	return len(s.deny) > 0 || s.more > 0 || now.Sub(s.first) >= countEvery
}

func (e *evidence) requeue(k workload.Key, s *sighting) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := e.pending[k]
	if cur == nil {
		e.pending[k] = s
		return
	}
	cur.first = minTime(cur.first, s.first)
	cur.add(s.flows, s.deny)
	cur.more += s.more
}

func (e *evidence) write(ctx context.Context, k workload.Key, s *sighting) error {
	name := client.ObjectKey{Namespace: k.Namespace, Name: workload.PolicyName(k.Kind, k.Name)}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p v1.WorkloadPolicy
		if err := e.api.Get(ctx, name, &p); err != nil {
			return err
		}
		if !s.addTo(&p.Status) {
			return nil
		}
		return e.writer.Status().Update(ctx, &p)
	})
	if apierrors.IsNotFound(err) {
		return nil // the workload has no policy: no promotion to prove
	}
	return err
}

// addTo adds the sighting to st, reporting whether it changed: its connections to the window's flow
// count when the window began before them, and its would-deny flows seen in the window under the
// policy's revision (or a later one that status has not caught up with) to wouldDeny, most recent
// first, at most MaxWouldDeny listed. A flow that fell off the list and comes back is counted again:
// wouldDenyFlows may overcount, never undercount.
func (s *sighting) addTo(st *v1.WorkloadPolicyStatus) bool {
	c := st.Coverage
	if c == nil {
		return false // the promoter has not opened a window yet
	}
	changed := false
	if s.flows > 0 && !s.first.Before(c.Since.Time) {
		c.Flows += s.flows
		changed = true
	}
	for k, f := range s.deny {
		if k.revision < st.Revision || f.LastSeen.Before(&c.Since) {
			continue
		}
		changed = true
		i := slices.IndexFunc(st.WouldDeny, func(l v1.FlowSummary) bool {
			return l.Direction == k.dir && l.Peer == k.peer && l.Protocol == k.proto && l.Port == k.port
		})
		if i < 0 {
			st.WouldDeny = append(st.WouldDeny, *f)
			st.WouldDenyFlows++
			continue
		}
		st.WouldDeny[i].Count += f.Count
		st.WouldDeny[i].LastSeen = maxTime(st.WouldDeny[i].LastSeen, f.LastSeen)
	}
	if s.more > 0 {
		st.WouldDenyFlows += s.more
		changed = true
	}
	slices.SortStableFunc(st.WouldDeny, func(a, b v1.FlowSummary) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen.Time), cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Port, b.Port))
	})
	if len(st.WouldDeny) > MaxWouldDeny {
		st.WouldDeny = st.WouldDeny[:MaxWouldDeny]
	}
	return changed
}

// observed is what the promoter found when it looked at a workload: the pods it runs, how many of
// them have a sidecar subscribed, and whether every pod that must have one by now (old enough, not
// terminating) has.
type observed struct {
	pods, reported int32
	full           bool
}

// measure updates st.Coverage at now from what the promoter observed, for the policy's generation.
// The window begins when the mode did, or later when the spec changed (a newer generation: rules
// added, widened or narrowed, not the peers' addresses coming and going); a new window starts with no
// flows counted and drops the would-deny flows seen before it. Each whole hour of the window counts
// as observed if every pod that must have a subscriber had one when the promoter looked, as a gap as
// soon as one had none.
func measure(st *v1.WorkloadPolicyStatus, generation int64, o observed, now time.Time) {
	c := st.Coverage
	since := now // a window opened now: what came before was not seen
	if c != nil {
		since = c.Since.Time
		if st.ModeSince.After(since) {
			since = st.ModeSince.Time
		}
		if c.Generation != 0 && generation != c.Generation {
			since = now
		}
	}
	if c == nil || !c.Since.Time.Equal(since) {
		c = &v1.Coverage{Since: metav1.NewTime(since)}
		kept := slices.DeleteFunc(st.WouldDeny, func(f v1.FlowSummary) bool { return f.LastSeen.Time.Before(since) })
		if len(kept) < len(st.WouldDeny) || len(kept) == 0 {
			// what fell off the list is older than what is listed: gone with it
			st.WouldDenyFlows = int32(len(kept))
		}
		st.WouldDeny = kept
		if len(st.WouldDeny) == 0 {
			st.WouldDeny = nil
		}
	} else {
		c = c.DeepCopy()
	}
	c.Generation = generation
	c.Pods, c.Reported = o.pods, min(o.pods, o.reported)
	full := o.pods > 0 && o.full
	elapsed := int32(now.Sub(since) / time.Hour)
	if counted := c.ObservedHours + c.GapHours; counted < elapsed {
		if full {
			c.ObservedHours += elapsed - counted
		} else {
			c.GapHours += elapsed - counted
		}
	}
	if !full && c.ObservedHours+c.GapHours == elapsed {
		c.GapHours++ // the hour under way has a gap already
	}
	c.Complete = c.GapHours == 0 && o.pods > 0 && c.Reported == o.pods
	st.Coverage = c
}

// missingEvidence says what an automatic promotion out of st's mode still lacks, "" when nothing.
func missingEvidence(st *v1.WorkloadPolicyStatus) string {
	var why []string
	switch c := st.Coverage; {
	case c == nil:
		why = append(why, "coverage not measured yet")
	case c.Pods == 0:
		why = append(why, "the workload runs no pod to observe")
	default:
		if c.Reported < c.Pods {
			why = append(why, fmt.Sprintf("%d of %d pods have no sidecar subscribed", c.Pods-c.Reported, c.Pods))
		}
		if c.GapHours > 0 {
			why = append(why, fmt.Sprintf("%d hours since %s had a pod without a sidecar (the window restarts when the rules change)",
				c.GapHours, c.Since.UTC().Format(time.RFC3339)))
		}
	}
	if st.WouldDenyFlows > 0 {
		why = append(why, fmt.Sprintf("%d flows Protect would deny (status.wouldDeny): allow them with a rule, or promote by hand", st.WouldDenyFlows))
	}
	return strings.Join(why, "; ")
}

// evidenceNote describes the evidence a promotion went on, for its Event.
func evidenceNote(st *v1.WorkloadPolicyStatus) string {
	c := st.Coverage
	return fmt.Sprintf("%d of %d pods reported since %s, %d hours observed, %d flows, none Protect would deny",
		c.Reported, c.Pods, c.Since.UTC().Format(time.RFC3339), c.ObservedHours, c.Flows)
}

// cover measures st's coverage at now from the workload's pods: those not finished, of which the ones
// not terminating and older than Stale (the replicas' status TTL) must have a sidecar subscribed by
// now.
func (p *Promoter) cover(wp *v1.WorkloadPolicy, st *v1.WorkloadPolicyStatus, list []corev1.Pod, now time.Time) {
	measure(st, wp.Generation, p.observe(st.Replicas, list, now), now)
}

// observe counts list's pods with a sidecar subscribed at one of replicas: by name, so that a pod
// subscribed at two replicas counts once and a gone pod's sidecar not at all, or by the replicas'
// Sidecars when one of them does not name all its pods (more than v1.MaxReplicaPods, or a policygen
// older than the names).
func (p *Promoter) observe(replicas []v1.ReplicaStatus, list []corev1.Pod, now time.Time) observed {
	subscribed := map[string]bool{}
	byName := true
	var sidecars int32
	for _, r := range replicas {
		sidecars += r.Sidecars
		byName = byName && len(r.Pods) < v1.MaxReplicaPods && (len(r.Pods) > 0 || r.Sidecars == 0)
		for _, name := range r.Pods {
			subscribed[name] = true
		}
	}
	var o observed
	var settled, silent int32
	for _, pod := range list {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		o.pods++
		due := pod.DeletionTimestamp == nil && now.Sub(pod.CreationTimestamp.Time) > p.opts.Stale
		if due {
			settled++
		}
		switch {
		case subscribed[pod.Name]:
			o.reported++
		case due:
			silent++
		}
	}
	if !byName {
		o.reported, o.full = min(o.pods, sidecars), sidecars >= settled
		return o
	}
	o.full = silent == 0
	return o
}

func maxTime(a, b metav1.Time) metav1.Time {
	if b.After(a.Time) {
		return b
	}
	return a
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
