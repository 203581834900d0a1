package resolve

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/api/v1alpha1"
	"podwall.io/podwall/policygen/workload"
)

// Watch subscribes the hub to the informers whose objects policies resolve from. Call it before the
// cache starts or after; the informers replay what they hold.
func (h *Hub) Watch(ctx context.Context, informers cache.Informers) error {
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Service{}, &corev1.Namespace{}, &corev1.Node{},
		&appsv1.ReplicaSet{}, &batchv1.Job{}, &v1alpha1.WorkloadPolicy{}} {
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { h.changed(o) },
			UpdateFunc: func(old, o any) { h.updated(old, o) },
			DeleteFunc: func(o any) { h.changed(o) },
		}); err != nil {
			return fmt.Errorf("watch %T: %w", obj, err)
		}
	}
	return nil
}

// updated skips pod updates that cannot change a resolved policy (conditions, container statuses).
func (h *Hub) updated(old, cur any) {
	if a, ok := old.(*corev1.Pod); ok {
		b := cur.(*corev1.Pod)
		if equality.Semantic.DeepEqual(a.Labels, b.Labels) && slices.Equal(a.Status.PodIPs, b.Status.PodIPs) &&
			a.Status.Phase == b.Status.Phase && (a.DeletionTimestamp == nil) == (b.DeletionTimestamp == nil) &&
			equality.Semantic.DeepEqual(a.OwnerReferences, b.OwnerReferences) {
			h.raise(b.ResourceVersion)
			return
		}
	}
	h.changed(cur)
}

// changed marks the entries an object may affect and wakes the worker.
func (h *Hub) changed(o any) {
	if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	obj, ok := o.(client.Object)
	if !ok {
		return
	}
	h.raise(obj.GetResourceVersion())
	h.mu.Lock()
	for k, e := range h.entries {
		var hit bool
		switch obj.(type) {
		case *corev1.Node:
			hit = e.deps.nodes
		case *corev1.Namespace:
			hit = e.deps.anyNamespace
		default:
			hit = e.deps.touches(obj.GetNamespace())
		}
		if hit {
			h.dirty[k] = true
		}
	}
	n := len(h.dirty)
	h.mu.Unlock()
	if n > 0 {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// raise moves the watermark up to a resourceVersion.
func (h *Hub) raise(rv string) {
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return
	}
	for {
		cur := h.watermark.Load()
		if v <= cur || h.watermark.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Start recomputes dirty entries until ctx ends, and forgets idle ones. It runs on every replica.
func (h *Hub) Start(ctx context.Context) error {
	tick := time.NewTicker(h.idle / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			h.forgetIdle()
		case <-h.wake:
			h.mu.Lock()
			dirty := h.dirty
			h.dirty = map[workload.Key]bool{}
			h.mu.Unlock()
			for k := range dirty {
				h.recompute(ctx, k)
			}
		}
	}
}

// NeedLeaderElection is false: every replica serves sidecars from its own cache.
func (h *Hub) NeedLeaderElection() bool { return false }

func (h *Hub) forgetIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, e := range h.entries {
		if e.users == 0 && time.Since(e.lastUsed) > h.idle {
			delete(h.entries, k)
		}
	}
	resolved.Set(float64(len(h.entries)))
}
