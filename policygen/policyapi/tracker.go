package policyapi

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// tracker knows which sidecars poll this replica and what they hold, and writes this replica's entry
// of each WorkloadPolicy's status.replicas (server-side apply, a field manager per replica, so replicas
// never overwrite each other's entries).
type tracker struct {
	hub         *resolve.Hub
	writer      client.Client
	replica     string
	subscribers prometheus.Gauge // polls in flight
	log         logr.Logger

	mu      sync.Mutex
	pods    map[types.UID]*sidecar
	written map[workload.Key]written
}

// written is an entry as last written, and when: entries are rewritten before the leader's promoter
// would take them for a dead replica's.
type written struct {
	counts
	at time.Time
}

type sidecar struct {
	workload workload.Key
	pod      string // its pod's name: a canary pod is served its own form (resolve.Snapshot.For)
	after    int64
	hash     string
	// mode is the mode the sidecar last reported enforcing, "" before its first report.
	mode policy.Mode
	// version is the version it sent with its last request (policy.SidecarVersion), guard its guard
	// (policy.ParseGuard).
	version string
	guard   policy.Guard
	// refused is the refusal of its config file last recorded as an Event, so that each is told once.
	refused  string
	polls    int  // in flight
	polled   bool // it has polled: a sidecar that only reported so far is not counted
	lastSeen time.Time
}

type counts struct {
	revision                   int64
	sidecars, inSync, weakened int32
	versions                   map[string]int32 // sidecars by version
	pods                       []string         // their pods, in name order, at most v1alpha1.MaxReplicaPods
}

func (c counts) equal(o counts) bool {
	return c.revision == o.revision && c.sidecars == o.sidecars && c.inSync == o.inSync && c.weakened == o.weakened &&
		maps.Equal(c.versions, o.versions) && slices.Equal(c.pods, o.pods)
}

func newTracker(hub *resolve.Hub, writer client.Client, replica string, subscribers prometheus.Gauge, log logr.Logger) *tracker {
	return &tracker{hub: hub, writer: writer, replica: replica, subscribers: subscribers, log: log,
		pods: map[types.UID]*sidecar{}, written: map[workload.Key]written{}}
}

// polling records a poll starting from a sidecar of version v guarding its pod as g; the returned
// func records its end.
func (t *tracker) polling(id Identity, v string, g policy.Guard, after int64, hash string) func() {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := t.pods[id.UID]
	if sc == nil {
		sc = &sidecar{}
		t.pods[id.UID] = sc
	}
	sc.workload, sc.pod, sc.version, sc.after, sc.hash, sc.polled = id.Workload, id.Pod.Name, v, after, hash, true
	sc.polls++
	sc.lastSeen = time.Now()
	sc.guard = clampGuard(g, sc.lastSeen)
	t.subscribers.Inc()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		sc.polls--
		sc.lastSeen = time.Now()
		t.subscribers.Dec()
	}
}

// reported records the mode a sidecar of version v guarding its pod as g says it enforces and returns,
// once per message, the refusal of its config file that it reports.
func (t *tracker) reported(id Identity, v string, g policy.Guard, r *policy.Report) (refused string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := t.pods[id.UID]
	if sc == nil {
		sc = &sidecar{workload: id.Workload, pod: id.Pod.Name}
		t.pods[id.UID] = sc
	}
	sc.mode, sc.version, sc.lastSeen = r.Mode, v, time.Now()
	sc.guard = clampGuard(g, sc.lastSeen)
	switch c := r.Config; {
	case c == nil:
	case c.File != policy.ConfigRefused:
		sc.refused = ""
	case c.Message != sc.refused:
		sc.refused = c.Message
		return c.Message
	}
	return ""
}

// clampGuard is g received at now: a restore the sidecar's clock puts in the future happened now.
func clampGuard(g policy.Guard, now time.Time) policy.Guard {
	if g.Tampered.After(now) {
		g.Tampered = now
	}
	return g
}

// tally counts, per workload, the sidecars polling now or within grace, by version, and those in sync:
// holding the current revision and enforcing a mode no weaker than its (a sidecar that has not
// reported yet is judged by its revision alone); and those weakened: failing open, enforcing a weaker
// mode, or tampered with within v1alpha1.WeakenedFor. It names their pods, and forgets sidecars gone
// longer than grace.
func (t *tracker) tally(grace time.Duration) map[workload.Key]counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[workload.Key]counts{}
	now := time.Now()
	for uid, sc := range t.pods {
		if sc.polls == 0 && time.Since(sc.lastSeen) > grace {
			delete(t.pods, uid)
			continue
		}
		if !sc.polled {
			continue
		}
		rev, hash, mode := t.hub.Current(sc.workload, sc.pod)
		c := out[sc.workload]
		c.revision = rev
		c.sidecars++
		if c.versions == nil {
			c.versions = map[string]int32{}
		}
		c.versions[sc.version]++
		current := (sc.hash != "" && sc.hash == hash) || (sc.hash == "" && sc.after == rev && rev != 0)
		weaker := sc.mode != "" && sc.mode.Weaker(mode)
		if current && !weaker {
			c.inSync++
		}
		if weaker || sc.guard.FailOpen || (!sc.guard.Tampered.IsZero() && now.Sub(sc.guard.Tampered) < v1alpha1.WeakenedFor) {
			c.weakened++
		}
		c.pods = append(c.pods, sc.pod)
		out[sc.workload] = c
	}
	for k, c := range out {
		slices.Sort(c.pods)
		c.pods = slices.Compact(c.pods)
		if len(c.pods) > v1alpha1.MaxReplicaPods {
			c.pods = c.pods[:v1alpha1.MaxReplicaPods]
		}
		out[k] = c
	}
	return out
}

// flush writes the entries that changed since the last flush or were written longer than refresh
// ago; a workload whose sidecars all left gets a zero entry once.
func (t *tracker) flush(ctx context.Context, tally map[workload.Key]counts, refresh time.Duration) {
	for k := range t.written {
		if _, ok := tally[k]; !ok {
			tally[k] = counts{}
		}
	}
	for k, c := range tally {
		if prev, ok := t.written[k]; ok && prev.counts.equal(c) && time.Since(prev.at) < refresh {
			continue
		}
		if err := t.apply(ctx, k, c); err != nil {
			t.log.Error(err, "write replica status", "workload", k.String())
			continue
		}
		if c.sidecars == 0 {
			delete(t.written, k)
		} else {
			t.written[k] = written{c, time.Now()}
		}
	}
}

func (t *tracker) apply(ctx context.Context, k workload.Key, c counts) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("WorkloadPolicy"))
	u.SetNamespace(k.Namespace)
	u.SetName(workload.PolicyName(k.Kind, k.Name))
	entry := map[string]any{
		"name": t.replica, "revision": c.revision, "sidecars": int64(c.sidecars), "sidecarsInSync": int64(c.inSync),
		"weakened": int64(c.weakened), "updated": time.Now().UTC().Format(time.RFC3339),
	}
	if len(c.pods) > 0 {
		pods := make([]any, len(c.pods))
		for i, p := range c.pods {
			pods[i] = p
		}
		entry["pods"] = pods
	}
	if versions := v1alpha1.SidecarVersionList(c.versions); versions != nil {
		list := make([]any, len(versions))
		for i, v := range versions {
			list[i] = map[string]any{"version": v.Version, "count": int64(v.Count)}
		}
		entry["sidecarVersions"] = list
	}
	if err := unstructured.SetNestedSlice(u.Object, []any{entry}, "status", "replicas"); err != nil {
		return err
	}
	err := t.writer.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("podwall-policygen/"+t.replica), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// run flushes every interval until ctx ends, rewriting unchanged entries every ttl/3; at the end it
// zeroes this replica's entries, since its sidecars are moving to another replica.
func (t *tracker) run(ctx context.Context, interval, grace, ttl time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			retire, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			t.flush(retire, map[workload.Key]counts{}, ttl/3)
			return
		case <-tick.C:
			t.flush(ctx, t.tally(grace), ttl/3)
		}
	}
}
