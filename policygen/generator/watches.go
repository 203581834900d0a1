package generator

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/workload"
)

// enqueueSelf maps a workload object to its own request; objects some other workload claims to
// control (a Deployment's ReplicaSets) map to nothing. Every pod maps to itself: whether a pod is its
// own workload takes verifying its owners, which Reconcile does.
func (g *Generator) enqueueSelf(kind string) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		if !candidate(obj) {
			return nil
		}
		return []reconcile.Request{requestFor(workload.Key{Namespace: obj.GetNamespace(), Kind: kind, Name: obj.GetName()})}
	})
}

// candidate reports whether obj may be a workload of its own, as far as its kind and references tell.
func candidate(obj client.Object) bool {
	_, isPod := obj.(*corev1.Pod)
	return isPod || workload.IsTop(obj)
}

// enqueueAll maps a Service change to every workload of every opted-in namespace: a Service feeds the
// ingress rules of the workloads it selects and the egress rules of any workload that names it.
func (g *Generator) enqueueAll() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list corev1.NamespaceList
		if err := g.client.List(ctx, &list, client.MatchingLabels{InjectLabel: "enabled"}); err != nil {
			log.FromContext(ctx).Error(err, "list opted-in namespaces")
			return nil
		}
		var reqs []reconcile.Request
		for _, ns := range list.Items {
			reqs = append(reqs, g.workloadsIn(ctx, ns.Name)...)
		}
		return reqs
	})
}

// enqueueSelectorless maps an EndpointSlice change of a Service without a selector, whose egress peers
// are pinned to its endpoint addresses, to every workload like a Service change; the slices of other
// Services (most of them, changing with every pod) map to nothing.
func (g *Generator) enqueueSelectorless() handler.EventHandler {
	all := g.enqueueAll()
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if g.ofSelectorless(ctx, e.Object) {
				all.Create(ctx, e, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if g.ofSelectorless(ctx, e.ObjectNew) || g.ofSelectorless(ctx, e.ObjectOld) {
				all.Update(ctx, e, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if g.ofSelectorless(ctx, e.Object) {
				all.Delete(ctx, e, q)
			}
		},
	}
}

// ofSelectorless reports whether an EndpointSlice belongs to an existing Service without a selector.
func (g *Generator) ofSelectorless(ctx context.Context, obj client.Object) bool {
	name := obj.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return false
	}
	var svc corev1.Service
	if err := g.client.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: name}, &svc); err != nil {
		return false // a Service created later is a Service event of its own
	}
	return len(svc.Spec.Selector) == 0
}

// enqueueNamespace maps a namespace change (its opt-in label) to its workloads.
func (g *Generator) enqueueNamespace() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return g.workloadsIn(ctx, obj.GetName())
	})
}

// enqueuePolicyWorkload maps a policy change to its workload, so that manifest rules someone removed
// by hand come back.
func enqueuePolicyWorkload() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		p := obj.(*v1.WorkloadPolicy)
		return []reconcile.Request{requestFor(workload.Key{Namespace: p.Namespace, Kind: p.Spec.Workload.Kind, Name: p.Spec.Workload.Name})}
	})
}

func (g *Generator) workloadsIn(ctx context.Context, ns string) []reconcile.Request {
	var reqs []reconcile.Request
	for _, kind := range workload.Kinds {
		list, _ := workload.NewList(kind)
		if err := g.client.List(ctx, list, client.InNamespace(ns)); err != nil {
			log.FromContext(ctx).Error(err, "list workloads", "kind", kind, "namespace", ns)
			continue
		}
		objs, _ := meta.ExtractList(list)
		for _, o := range objs {
			if obj := o.(client.Object); candidate(obj) {
				reqs = append(reqs, requestFor(workload.Key{Namespace: ns, Kind: kind, Name: obj.GetName()}))
			}
		}
	}
	return reqs
}
