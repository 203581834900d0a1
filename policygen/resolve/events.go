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
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/workload"
)

// Watch subscribes the hub to the informers whose objects policies resolve from. Call it before the
// cache starts or after; the informers replay what they hold.
func (h *Hub) Watch(ctx context.Context, informers cache.Informers) error {
	objs := []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Namespace{}, &corev1.Node{}, &v1alpha1.WorkloadPolicy{}}
	for _, kind := range workload.Kinds { // pods and every owner kind: a pod counts for a workload only as verified against them
		obj, _ := workload.New(kind)
		objs = append(objs, obj)
	}
	for _, obj := range objs {
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

// updated skips updates that cannot change a resolved policy (pod conditions, ReplicaSet replica
// counts, node heartbeats, a policy's status but its canary pods), which are most updates; only the watermark moves. A
// change that may is taken for both states: a pod that no longer claims a workload, or no longer
// matches its selector, must leave that workload's addresses.
func (h *Hub) updated(old, cur any) {
	if irrelevant(old, cur) {
		h.raise(cur.(client.Object).GetResourceVersion())
		return
	}
	h.changed(old)
	h.changed(cur)
}

func irrelevant(old, cur any) bool {
	same := equality.Semantic.DeepEqual
	switch a := old.(type) {
	case *corev1.Pod:
		b := cur.(*corev1.Pod)
		return same(a.Labels, b.Labels) && slices.Equal(a.Status.PodIPs, b.Status.PodIPs) && a.Status.Phase == b.Status.Phase &&
			(a.DeletionTimestamp == nil) == (b.DeletionTimestamp == nil) && same(a.OwnerReferences, b.OwnerReferences)
	case *appsv1.ReplicaSet, *appsv1.Deployment, *appsv1.StatefulSet, *appsv1.DaemonSet, *batchv1.Job, *batchv1.CronJob:
		// Owners reads their UID (fixed), selector (immutable), labels (matched by their own controller's
		// selector) and controller reference.
		ao, bo := a.(client.Object), cur.(client.Object)
		return same(ao.GetOwnerReferences(), bo.GetOwnerReferences()) && same(ao.GetLabels(), bo.GetLabels())
	case *corev1.Service:
		b := cur.(*corev1.Service)
		return same(a.Spec.Selector, b.Spec.Selector) && slices.Equal(a.Spec.ClusterIPs, b.Spec.ClusterIPs)
	case *discoveryv1.EndpointSlice:
		b := cur.(*discoveryv1.EndpointSlice)
		return a.Labels[discoveryv1.LabelServiceName] == b.Labels[discoveryv1.LabelServiceName] && a.AddressType == b.AddressType &&
			same(a.Endpoints, b.Endpoints)
	case *corev1.Node:
		return slices.Equal(a.Status.Addresses, cur.(*corev1.Node).Status.Addresses)
	case *corev1.Namespace:
		return same(a.Labels, cur.(*corev1.Namespace).Labels)
	case *v1alpha1.WorkloadPolicy:
		b := cur.(*v1alpha1.WorkloadPolicy)
		return a.Generation == b.Generation && slices.Equal(CanaryPods(a), CanaryPods(b)) // spec and canaries unchanged
	}
	return false
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
	owners := h.ownersOf(obj) // reads the cache: before taking the lock
	h.mu.Lock()
	if wp, ok := obj.(*v1alpha1.WorkloadPolicy); ok {
		// A policy feeds only its own workload's resolved form.
		k := workload.Key{Namespace: wp.Namespace, Kind: wp.Spec.Workload.Kind, Name: wp.Spec.Workload.Name}
		if h.entries[k] != nil {
			h.dirty[k] = true
		}
	} else {
		for k, e := range h.entries {
			if affects(obj, owners, &e.deps) {
				h.dirty[k] = true
			}
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

// affects reports whether a change to obj, which belongs to the workloads owners, may change a
// policy resolved with d.
func affects(obj client.Object, owners []workload.Key, d *deps) bool {
	switch obj.(type) {
	case *corev1.Node:
		return d.nodes
	case *corev1.Namespace:
		return d.anyNamespace
	}
	if d.anyNamespace || d.namespaces[obj.GetNamespace()] {
		return true
	}
	for _, k := range owners {
		if d.workloads[k] {
			return true
		}
	}
	return false
}

// ownersOf lists the workloads whose pods a change to obj may change: for a pod or an owner object,
// itself and the controllers it claims (workload.Claimed), which resolution then verifies. A claim is
// taken as written here on purpose: a pod counted for a workload only once its owners are in the cache
// is counted when their own events arrive, which dirty the same workloads.
func (h *Hub) ownersOf(obj client.Object) []workload.Key {
	if workload.KindOf(obj) == "" {
		return nil
	}
	return workload.Claimed(context.Background(), h.reader, obj)
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
	h.metrics.resolved.Set(float64(len(h.entries)))
}
