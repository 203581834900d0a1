package learn

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/equality"
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

// maxPending bounds the observations held per workload between flushes.
const maxPending = 10000

// LearnerOptions configure a Learner; zero values take the defaults in parentheses.
type LearnerOptions struct {
	// Interval is how often pending observations are written (2s).
	Interval time.Duration
	// Clock stamps lastLearned and lastViolation (the real clock).
	Clock clock.PassiveClock
	// Registerer receives the learner's metrics; nil registers none.
	Registerer prometheus.Registerer
	// CollapseNamespace is how many workloads of one other namespace a policy's learned rules name on
	// one direction, protocol and port before they give way to their namespace, Merge's Collapse.At
	// (never).
	CollapseNamespace int
}

// Learner takes reports (it is the policy API's ReportSink), identifies their peers from the cache and
// writes learned rules and counters in batches, one write per workload per interval however many of
// its sidecars report. Every replica runs one: a report is handled where it lands, and since merging
// only widens what a spec allows (a collapse replaces workloads by their namespace), concurrent
// writers converge through optimistic concurrency.
type Learner struct {
	writer client.Client
	api    client.Reader // uncached, for read-modify-write
	cache  client.Reader
	opts   LearnerOptions
	log    logr.Logger
	// dropped counts observations refused because a batch was full.
	dropped prometheus.Counter
	// evidence gathers the reports' promotion evidence, written with each flush.
	evidence *evidence

	mu      sync.Mutex
	pending map[workload.Key]*batch
}

type batch struct {
	obs        map[obsKey]Observation // keyed without the peer, whose pointers differ per report, but its name
	violations int64
}

type obsKey struct {
	dir   policy.Direction
	addr  netip.Addr
	fqdn  string // one address may be reached by several names (a CDN's): each is learned
	proto policy.Protocol
	port  int32
}

func keyOf(o Observation) obsKey { return obsKey{o.Direction, o.Addr, o.Peer.FQDN, o.Protocol, o.Port} }

// NewLearner returns a learner reading peers from cache and policies from api, writing through writer.
func NewLearner(writer client.Client, api, cache client.Reader, opts LearnerOptions, log logr.Logger) *Learner {
	opts.Interval = cmp.Or(opts.Interval, 2*time.Second)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_policygen_learn_dropped_total",
		Help: "Reported observations dropped because a workload's pending batch was full.",
	})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(dropped)
	}
	return &Learner{writer: writer, api: api, cache: cache, opts: opts, log: log, dropped: dropped, pending: map[workload.Key]*batch{},
		evidence: newEvidence(writer, api, opts.Clock, log)}
}

// Accept queues a validated report of id's workload.
func (l *Learner) Accept(ctx context.Context, id policyapi.Identity, r *policy.Report) error {
	var obs []Observation
	var violations int64
	peers := make([]v1.Peer, len(r.Entries)) // each entry's peer as identified, for the evidence too
	for i, e := range r.Entries {
		if e.Verdict == policy.Audit || e.Verdict == policy.Deny {
			violations += int64(e.Count)
		}
		if e.Direction == policy.Loopback {
			// Both ends are in the pod: the port is all there is to learn.
			obs = append(obs, Observation{Direction: e.Direction, Addr: e.Peer, Protocol: policy.Protocol(e.Protocol), Port: int32(e.Port)})
			continue
		}
		// A DNS query's name is not its resolver's: the resolver is learned like any peer.
		var name string
		if e.Direction == policy.Egress && e.Evaluator != policyapi.QueryEvaluator {
			name = e.Name
		}
		peer, err := identify(ctx, l.cache, l.api, id.Workload.Namespace, e.Peer, name)
		if err != nil {
			return err
		}
		peers[i] = peer
		obs = append(obs, Observation{Direction: e.Direction, Addr: e.Peer, Peer: peer, Protocol: policy.Protocol(e.Protocol), Port: int32(e.Port)})
	}
	l.evidence.observe(id, r, peers, l.opts.Clock.Now())
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.pending[id.Workload]
	if b == nil {
		b = &batch{obs: map[obsKey]Observation{}}
		l.pending[id.Workload] = b
	}
	b.violations += violations
	for _, o := range obs {
		k := keyOf(o)
		if _, held := b.obs[k]; !held && len(b.obs) >= maxPending {
			l.dropped.Inc()
			continue
		}
		b.obs[k] = o
	}
	return nil
}

// Start writes pending batches every interval until ctx ends.
func (l *Learner) Start(ctx context.Context) error {
	tick := time.NewTicker(l.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			l.Flush(ctx)
		}
	}
}

// NeedLeaderElection is false: reports land on every replica.
func (l *Learner) NeedLeaderElection() bool { return false }

// Flush writes what is pending now; a batch that fails to write is kept for the next flush.
func (l *Learner) Flush(ctx context.Context) {
	l.mu.Lock()
	todo := l.pending
	l.pending = map[workload.Key]*batch{}
	l.mu.Unlock()
	for k, b := range todo {
		if err := l.write(ctx, k, b); err != nil {
			l.log.Error(err, "write learned rules", "workload", k.String())
			l.requeue(k, b)
		}
	}
	l.evidence.flush(ctx)
}

func (l *Learner) requeue(k workload.Key, b *batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.pending[k]
	if cur == nil {
		l.pending[k] = b
		return
	}
	cur.violations += b.violations
	for k, o := range b.obs {
		if len(cur.obs) < maxPending {
			cur.obs[k] = o
		}
	}
}

func (l *Learner) write(ctx context.Context, k workload.Key, b *batch) error {
	obs := make([]Observation, 0, len(b.obs))
	for _, o := range b.obs {
		obs = append(obs, o)
	}
	sortObservations(obs)
	name := client.ObjectKey{Namespace: k.Namespace, Name: workload.PolicyName(k.Kind, k.Name)}
	var learned int
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p v1.WorkloadPolicy
		if err := l.api.Get(ctx, name, &p); err != nil {
			return err
		}
		spec := p.Spec.DeepCopy()
		learned = Merge(spec, p.Status.OpenPorts, obs, Collapse{At: l.opts.CollapseNamespace, Namespace: k.Namespace})
		if equality.Semantic.DeepEqual(spec, &p.Spec) {
			return nil
		}
		p.Spec = *spec
		return l.writer.Update(ctx, &p)
	})
	if apierrors.IsNotFound(err) {
		return nil // the workload has no policy (yet): nothing to learn into
	}
	if err != nil {
		return fmt.Errorf("update spec: %w", err)
	}
	if learned == 0 && b.violations == 0 {
		return nil
	}
	now := metav1.NewTime(l.opts.Clock.Now())
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p v1.WorkloadPolicy
		if err := l.api.Get(ctx, name, &p); err != nil {
			return client.IgnoreNotFound(err)
		}
		if learned > 0 {
			p.Status.LearnedFlows += int64(learned)
			p.Status.LastLearned = &now
		}
		if b.violations > 0 {
			p.Status.Violations += b.violations
			p.Status.LastViolation = &now
		}
		return l.writer.Status().Update(ctx, &p)
	})
}
