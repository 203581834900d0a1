package netpolsync

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/export"
	"podwall.io/podwall/policygen/workload"
)

// namesIndex indexes WorkloadPolicies by what their NetworkPolicy is translated from: their own
// workload and the workloads and Services their rules name ("workload:" or "service:" and the key).
const namesIndex = "podwall.io/netpolsync-names"

// SetupWithManager indexes the policies and registers the controller and its watches: the policies
// (their spec), the NetworkPolicies of podwall's names (to put back what was edited or deleted, and to
// take a name over once a foreign object leaves it), and the workloads' pod labels and Services'
// selectors that the translation reads.
func (s *Syncer) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1.WorkloadPolicy{}, namesIndex, func(obj client.Object) []string {
		return names(obj.(*v1.WorkloadPolicy))
	}); err != nil {
		return fmt.Errorf("index policies by the names they read: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).Named("networkpolicy-sync").
		For(&v1.WorkloadPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(policyOfNetworkPolicy))
	for _, kind := range workload.Kinds {
		obj, _ := workload.New(kind)
		b = b.Watches(obj, s.enqueueReaders(func(o client.Object) string {
			return "workload:" + workload.Key{Namespace: o.GetNamespace(), Kind: kind, Name: o.GetName()}.String()
		}), builder.WithPredicates(changed(podLabels)))
	}
	return b.Watches(&corev1.Service{}, s.enqueueReaders(func(o client.Object) string {
		return "service:" + o.GetNamespace() + "/" + o.GetName()
	}), builder.WithPredicates(changed(func(o client.Object) map[string]string {
		return o.(*corev1.Service).Spec.Selector
	}))).Complete(s)
}

// names are the index values of p.
func names(p *v1.WorkloadPolicy) []string {
	out := []string{"workload:" + workload.Key{Namespace: p.Namespace, Kind: p.Spec.Workload.Kind, Name: p.Spec.Workload.Name}.String()}
	for _, r := range slices.Concat(p.Spec.Ingress, p.Spec.Egress) {
		for _, peer := range r.Peers {
			switch {
			case peer.Workload != nil:
				k := workload.Key{Namespace: cmp.Or(peer.Workload.Namespace, p.Namespace), Kind: peer.Workload.Kind, Name: peer.Workload.Name}
				out = append(out, "workload:"+k.String())
			case peer.Service != nil:
				out = append(out, "service:"+cmp.Or(peer.Service.Namespace, p.Namespace)+"/"+peer.Service.Name)
			}
		}
	}
	return out
}

// policyOfNetworkPolicy maps a NetworkPolicy of a synced name, podwall's or not, to its policy.
func policyOfNetworkPolicy(_ context.Context, obj client.Object) []reconcile.Request {
	name, ok := strings.CutPrefix(obj.GetName(), export.Name(""))
	if !ok || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

// enqueueReaders maps an object to the policies whose translation reads it, found by the index value
// key gives it. The policy API's Service is read by every policy: its change maps to all of them.
func (s *Syncer) enqueueReaders(key func(client.Object) string) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var opts []client.ListOption
		if svc, ok := obj.(*corev1.Service); !ok || svc.Namespace != s.opts.PolicyAPI.Namespace || svc.Name != s.opts.PolicyAPI.Name {
			opts = append(opts, client.MatchingFields{namesIndex: key(obj)})
		}
		var list v1.WorkloadPolicyList
		if err := s.client.List(ctx, &list, opts...); err != nil {
			log.FromContext(ctx).Error(err, "list policies reading an object", "object", key(obj))
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, p := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
		}
		return reqs
	})
}

// podLabels are the labels of a workload's pods, as the translation selects them.
func podLabels(obj client.Object) map[string]string {
	tpl, err := workload.Template(obj)
	if err != nil {
		return nil
	}
	return tpl.Labels
}

// changed passes creations, deletions and the updates that change what of returns: a Deployment's
// status or a pod's phase changes often, and the translation reads neither.
func changed(of func(client.Object) map[string]string) predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !maps.Equal(of(e.ObjectOld), of(e.ObjectNew))
	}}
}
