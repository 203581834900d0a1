package ui

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// Event is one reported deny or audit as the live view shows it.
type Event struct {
	// Seq orders verdicts within this replica; a reconnecting stream asks for what follows its last.
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Namespace string    `json:"namespace"`
	// Workload is "Kind/name" of the reporting pod's workload.
	Workload  string `json:"workload"`
	Pod       string `json:"pod"`
	Direction string `json:"direction"`
	// Peer names the remote end as resolve.Owner does: a workload "namespace/Kind/name", a Service
	// "namespace/Service/name", "nodes", or the address; PeerAddr is the address reported.
	Peer     string `json:"peer"`
	PeerAddr string `json:"peerAddr"`
	// Name is, for egress, the DNS name the pod resolved PeerAddr from (the verdict line's dst_name);
	// for a DNS query's verdict (Evaluator "dns-query"), the name it asked for.
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	Verdict  string `json:"verdict"`
	Count    uint64 `json:"count"`
	// Rule and Evaluator are what decided, as the sidecar reported them: a rule id of the revision it
	// ran, or "default" for the mode's default.
	Rule      string `json:"rule"`
	Evaluator string `json:"evaluator,omitempty"`
	Mode      string `json:"mode,omitempty"`
	// Replica is the policygen replica that took the report, in the cluster stream.
	Replica string `json:"replica,omitempty"`
}

// Feed keeps the latest denies and audits in a ring, per-minute counts of the last hour per workload,
// and wakes the streams waiting for more.
type Feed struct {
	names client.Reader
	now   func() time.Time

	mu      sync.Mutex
	ring    []Event // ring[seq % len]
	next    uint64  // the next Seq; Seq starts at 1
	wake    chan struct{}
	buckets map[workload.Key]*[60]minute
	pods    map[workload.Key]map[string]PodState
	flows   *Flows // every reported connection, for the service map
}

// PodState is what a pod's sidecar last reported of itself: the mode it enforces and its workload's
// config file.
type PodState struct {
	Pod string `json:"pod"`
	// Mode is the mode it enforces, the strictest of the policy's and its configured floor.
	Mode policy.Mode `json:"mode"`
	// File is what became of the workload's config file (none, applied, refused); Message says why it
	// was refused.
	File    policy.ConfigFileState `json:"file,omitempty"`
	Message string                 `json:"message,omitempty"`
	Seen    time.Time              `json:"seen"`
}

type minute struct {
	at    int64 // unix minute
	count uint64
}

// DefaultFeedSize is how many verdicts a feed keeps when NewFeed is given 0.
const DefaultFeedSize = 4096

// NewFeed returns a feed of size verdicts naming peers from names (a cache with resolve's IPIndex).
func NewFeed(names client.Reader, size int) *Feed {
	if size <= 0 {
		size = DefaultFeedSize
	}
	return &Feed{names: names, now: time.Now, ring: make([]Event, size), next: 1, wake: make(chan struct{}),
		buckets: map[workload.Key]*[60]minute{}, pods: map[workload.Key]map[string]PodState{},
		flows: NewFlows(0)}
}

// Sink wraps a report sink: reports go to next first, and only those it took are recorded, so that a
// report the sidecar must resend is not shown twice.
func (f *Feed) Sink(next policyapi.ReportSink) policyapi.ReportSink { return sink{next: next, feed: f} }

type sink struct {
	next policyapi.ReportSink
	feed *Feed
}

func (s sink) Accept(ctx context.Context, id policyapi.Identity, r *policy.Report) error {
	if err := s.next.Accept(ctx, id, r); err != nil {
		return err
	}
	s.feed.Record(ctx, id, r)
	return nil
}

// Record adds a report's denies and audits, and the pod's state; the service map counts every entry.
// Each peer address is named once per report, however many of its entries name it.
func (f *Feed) Record(ctx context.Context, id policyapi.Identity, r *policy.Report) {
	f.recordPod(id, r)
	all := make([]Event, 0, len(r.Entries))
	var vs []Event
	names := map[netip.Addr]string{}
	for _, e := range r.Entries {
		peer, ok := names[e.Peer]
		if !ok {
			peer = f.peerName(ctx, e.Peer)
			names[e.Peer] = peer
		}
		at := e.LastSeen
		if at.IsZero() {
			at = f.now()
		}
		v := Event{Time: at.UTC(), Namespace: id.Workload.Namespace,
			Workload: id.Workload.Kind + "/" + id.Workload.Name, Pod: id.Pod.Name, Direction: e.Direction.String(),
			Peer: peer, PeerAddr: e.Peer.String(), Name: e.Name, Protocol: string(e.Protocol), Port: e.Port,
			Verdict: e.Verdict.String(), Count: e.Count, Rule: e.Rule, Evaluator: e.Evaluator, Mode: string(r.Mode)}
		all = append(all, v)
		if e.Verdict == policy.Deny || e.Verdict == policy.Audit {
			vs = append(vs, v)
		}
	}
	f.flows.Add(all...)
	if len(vs) > 0 {
		f.add(id.Workload, vs)
	}
}

// add numbers the verdicts of workload k, keeps them and wakes the streams.
func (f *Feed) add(k workload.Key, vs []Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.buckets[k]
	if b == nil {
		b = &[60]minute{}
		f.buckets[k] = b
	}
	for _, v := range vs {
		v.Seq = f.next
		f.ring[f.next%uint64(len(f.ring))] = v
		f.next++
		m := f.now().Unix() / 60
		if slot := &b[m%60]; slot.at == m {
			slot.count += v.Count
		} else {
			*slot = minute{at: m, count: v.Count}
		}
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// peerName names the owner of addr, falling back to the address: a name the cache cannot give now is
// no reason to lose the verdict.
func (f *Feed) peerName(ctx context.Context, addr netip.Addr) string {
	o, err := resolve.OwnerOf(ctx, f.names, nil, addr)
	if err != nil {
		return addr.String()
	}
	return o.String()
}

// After returns the verdicts following seq, oldest first, how many of them the ring no longer holds,
// and a channel closed when more arrive.
func (f *Feed) After(seq uint64) (vs []Event, lost uint64, more <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	oldest := uint64(1)
	if f.next > uint64(len(f.ring)) {
		oldest = f.next - uint64(len(f.ring))
	}
	first := seq + 1
	if first > f.next {
		first = oldest // a seq this feed never issued: the caller saw another replica or an earlier run
	}
	if first < oldest {
		lost, first = oldest-first, oldest
	}
	for s := first; s < f.next; s++ {
		vs = append(vs, f.ring[s%uint64(len(f.ring))])
	}
	return vs, lost, f.wake
}

// recordPod keeps the state the pod's sidecar reported.
func (f *Feed) recordPod(id policyapi.Identity, r *policy.Report) {
	st := PodState{Pod: id.Pod.Name, Mode: r.Mode, Seen: f.now().UTC()}
	if c := r.Config; c != nil {
		st.File, st.Message = c.File, c.Message
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetPods(id.Workload)
	if f.pods[id.Workload] == nil {
		f.pods[id.Workload] = map[string]PodState{}
	}
	f.pods[id.Workload][id.Pod.Name] = st
}

// podStateTTL is how long a pod's reported state is shown after its last report.
const podStateTTL = time.Hour

// Pods returns the state each pod of workload k reported in the last hour, by pod name.
func (f *Feed) Pods(k workload.Key) []PodState {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetPods(k)
	out := slices.Collect(maps.Values(f.pods[k]))
	slices.SortFunc(out, func(a, b PodState) int { return strings.Compare(a.Pod, b.Pod) })
	return out
}

// forgetPods drops the states of workload k older than podStateTTL; f.mu is held.
func (f *Feed) forgetPods(k workload.Key) {
	for name, st := range f.pods[k] {
		if f.now().Sub(st.Seen) > podStateTTL {
			delete(f.pods[k], name)
		}
	}
	if len(f.pods[k]) == 0 {
		delete(f.pods, k)
	}
}

// Local returns this replica's Local: the flows seen in the last span (none for 0), the last hour's
// counts and the pods' states.
func (f *Feed) Local(span time.Duration) Local {
	l := Local{Flows: []FlowCount{}, LastHour: map[string]uint64{}, Pods: map[string][]PodState{}}
	if span > 0 {
		l.Flows = append(l.Flows, f.flows.Since(f.now().Add(-span))...)
	}
	for k, n := range f.LastHour() {
		l.LastHour[k.String()] = n
	}
	f.mu.Lock()
	keys := slices.Collect(maps.Keys(f.pods))
	f.mu.Unlock()
	for _, k := range keys {
		if states := f.Pods(k); len(states) > 0 {
			l.Pods[k.String()] = states
		}
	}
	return l
}

// LastHour returns each workload's denies and audits of the last 60 minutes.
func (f *Feed) LastHour() map[workload.Key]uint64 {
	now := f.now().Unix() / 60
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[workload.Key]uint64{}
	for k, b := range f.buckets {
		var n uint64
		for _, m := range b {
			if now-m.at < 60 {
				n += m.count
			}
		}
		if n > 0 {
			out[k] = n
		}
	}
	return out
}
