package resolve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/workload"
)

// ErrNoPolicy is returned for a workload that has no WorkloadPolicy (yet).
var ErrNoPolicy = errors.New("workload has no policy")

// Hub keeps the resolved policies of the workloads being asked for.
//
// Revisions: every replica resolves from its own cache, and a sidecar may move between replicas, so a
// revision must mean the same everywhere without coordination. A new resolved form takes as its
// revision the highest resourceVersion this replica has seen in any event (its watermark), and at
// least the previous revision plus one. resourceVersions are etcd revisions, increasing across the
// cluster, so whatever change a replica sees later carries a higher number than any revision issued
// before it on any replica, and a sidecar waiting for "a revision after mine" is never skipped. Two
// replicas may give one content different revisions; the content hash (served as the ETag) lets a
// sidecar that moved say what it holds, and a differing hash is answered at once.
type Hub struct {
	reader  client.Reader
	log     logr.Logger
	idle    time.Duration
	metrics metrics

	watermark  atomic.Int64
	recomputes atomic.Uint64
	mu         sync.Mutex
	entries    map[workload.Key]*entry
	dirty      map[workload.Key]bool
	wake       chan struct{}
}

// entry is one workload's resolved state.
type entry struct {
	// computing is held through a resolution and its publishing. Acquire's first resolution and the
	// worker's may run at once; unserialized, the one that read the cache first could publish last, and
	// a stale form would stand with nothing left to dirty it (a pod that arrived between the two reads
	// missing from its workload's addresses until the next change).
	computing sync.Mutex

	pol      *policy.Policy // nil with err set when it could not be resolved
	err      error
	hash     string
	canary   canary
	deps     deps
	changed  chan struct{} // closed when pol is replaced
	ready    chan struct{} // closed once the first resolution is done
	users    int           // callers between Acquire and release
	lastUsed time.Time
}

// Snapshot is one resolved revision of a workload's policy.
type Snapshot struct {
	Policy *policy.Policy
	// Hash identifies the content (the revision aside).
	Hash string
	// Changed is closed when a newer snapshot replaces this one.
	Changed <-chan struct{}
	canary  canary
}

// canary is the form of a revision served to the workload's canary pods (CanaryPods), under the same
// revision.
type canary struct {
	pods   []string
	policy *policy.Policy
	hash   string
}

// For is the policy served to the named pod of the workload, and its hash: Policy, or for a canary
// pod the same rules in Protect with Canary set.
func (s Snapshot) For(pod string) (*policy.Policy, string) {
	if _, ok := slices.BinarySearch(s.canary.pods, pod); ok {
		return s.canary.policy, s.canary.hash
	}
	return s.Policy, s.Hash
}

// HubOptions configure a Hub; zero values take the defaults in parentheses.
type HubOptions struct {
	// Idle is how long a workload nobody asks for is kept up to date (5m).
	Idle time.Duration
	// Registerer receives the hub's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// NewHub returns a hub that reads from r (an informer cache).
func NewHub(r client.Reader, opts HubOptions, log logr.Logger) *Hub {
	if opts.Idle <= 0 {
		opts.Idle = 5 * time.Minute
	}
	return &Hub{reader: r, log: log, idle: opts.Idle, metrics: newMetrics(opts.Registerer),
		entries: map[workload.Key]*entry{}, dirty: map[workload.Key]bool{}, wake: make(chan struct{}, 1)}
}

// Acquire returns the workload's current snapshot, resolving it on first use, and keeps it maintained
// until release is called.
func (h *Hub) Acquire(ctx context.Context, k workload.Key) (Snapshot, func(), error) {
	h.mu.Lock()
	e, ok := h.entries[k]
	if !ok {
		e = &entry{changed: make(chan struct{}), ready: make(chan struct{}), deps: everything}
		h.entries[k] = e
		h.metrics.resolved.Set(float64(len(h.entries)))
	}
	e.users++
	e.lastUsed = time.Now()
	h.mu.Unlock()
	release := func() {
		h.mu.Lock()
		e.users--
		e.lastUsed = time.Now()
		h.mu.Unlock()
	}
	if !ok {
		h.recompute(ctx, k)
		close(e.ready)
	}
	if err := waitReady(ctx, e.ready); err != nil {
		release()
		return Snapshot{}, func() {}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.pol == nil {
		err := e.err
		if err == nil {
			err = ErrNoPolicy
		}
		return Snapshot{Changed: e.changed}, release, err
	}
	return Snapshot{Policy: e.pol, Hash: e.hash, Changed: e.changed, canary: e.canary}, release, nil
}

// waitReady waits for a concurrent first caller's resolution; a resolved entry never waits, even
// when ctx is done.
func waitReady(ctx context.Context, ready <-chan struct{}) error {
	select {
	case <-ready:
		return nil
	default:
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Bump gives the workload's current content a revision above after, for a sidecar that holds other
// content under a revision this replica has not issued (it was served by another replica).
func (h *Hub) Bump(k workload.Key, after int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entries[k]
	if e == nil || e.pol == nil || e.pol.Revision > after {
		return
	}
	h.publish(e, e.pol, e.hash, e.canary.pods, after+1)
}

// Current is the workload's current revision, and the content hash and mode served to the named pod
// of it (Snapshot.For), zero when it is not resolved here.
func (h *Hub) Current(k workload.Key, pod string) (int64, string, policy.Mode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.entries[k]; e != nil && e.pol != nil {
		p, hash := Snapshot{Policy: e.pol, Hash: e.hash, canary: e.canary}.For(pod)
		return p.Revision, hash, p.Mode
	}
	return 0, "", ""
}

// Recomputes counts resolutions since the start.
func (h *Hub) Recomputes() uint64 { return h.recomputes.Load() }

// recompute resolves k again and publishes a new revision if the content changed. While it reads, the
// entry depends on everything, so that a change landing between the reads and the new dependencies
// marks it dirty again instead of being missed. Resolutions of one entry run one at a time (see
// entry.computing).
func (h *Hub) recompute(ctx context.Context, k workload.Key) {
	h.mu.Lock()
	e := h.entries[k]
	h.mu.Unlock()
	if e == nil {
		return
	}
	e.computing.Lock()
	defer e.computing.Unlock()
	h.mu.Lock()
	e.deps = everything
	h.mu.Unlock()
	pol, canaries, d, err := h.resolve(ctx, k)
	h.recomputes.Add(1)
	h.metrics.resolutions.Inc()
	hash := ""
	if err == nil {
		hash = policy.ContentHash(pol)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.entries[k] != e {
		return // forgotten while resolving
	}
	e.deps = d
	if err != nil {
		if !errors.Is(err, ErrNoPolicy) {
			h.log.Error(err, "resolve policy", "workload", k.String())
		}
		// Keep serving the last good policy when resolution fails; forget it when the policy is gone.
		if e.pol == nil || errors.Is(err, ErrNoPolicy) {
			e.err = err
			if e.pol != nil {
				e.pol, e.hash, e.canary = nil, "", canary{}
				close(e.changed)
				e.changed = make(chan struct{})
			}
		}
		return
	}
	if e.pol != nil && e.hash == hash && slices.Equal(e.canary.pods, canaries) {
		return
	}
	rev := max(h.watermark.Load(), 1)
	if e.pol != nil {
		rev = max(rev, e.pol.Revision+1)
	}
	e.err = nil
	h.publish(e, pol, hash, canaries, rev)
}

// publish installs pol under rev, with its canary form for the pods canaries, and wakes everyone
// waiting on the previous snapshot; h.mu is held.
func (h *Hub) publish(e *entry, pol *policy.Policy, hash string, canaries []string, rev int64) {
	cp := *pol
	cp.Revision = rev
	e.pol, e.hash = &cp, hash
	e.canary = canary{}
	if len(canaries) > 0 {
		c := canaryOf(&cp)
		e.canary = canary{pods: canaries, policy: c, hash: policy.ContentHash(c)}
	}
	h.metrics.revisions.Inc()
	close(e.changed)
	e.changed = make(chan struct{})
}

// resolve resolves k's policy, and names its canary pods.
func (h *Hub) resolve(ctx context.Context, k workload.Key) (*policy.Policy, []string, deps, error) {
	d := newDeps()
	var wp v1alpha1.WorkloadPolicy
	err := h.reader.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: workload.PolicyName(k.Kind, k.Name)}, &wp)
	if apierrors.IsNotFound(err) {
		return nil, nil, d, ErrNoPolicy
	}
	if err != nil {
		return nil, nil, d, fmt.Errorf("get policy: %w", err)
	}
	if wp.Spec.Workload.Kind != k.Kind || wp.Spec.Workload.Name != k.Name {
		return nil, nil, d, ErrNoPolicy
	}
	pol, rd, err := resolvePolicy(ctx, h.reader, &wp)
	if err != nil {
		return nil, nil, d, err
	}
	return pol, CanaryPods(&wp), rd, nil
}
