// Package generator is the controller that keeps one WorkloadPolicy per workload in opted-in namespaces,
// writing the rules package manifest derives from the workload's manifest (origin manifest) and leaving
// every other rule alone. It runs on the leader only, like everything that writes to the API server.
//
// Manifest rules come from objects a namespace user may write (Services, EndpointSlices, the
// workload's env and annotations), so they never widen a policy in Protect by themselves: a derived
// rule that would add a rule, a peer, a port or an endpoint address is kept out of the spec and listed
// in status.proposals with what caused it (and an Event), until someone who may update the policy
// accepts it with the annotation podwall.io/accept-proposals (or in the UI), or the policy sets
// spec.autoAcceptManifestRules. What only tightens (a Service or a port gone, an endpoint address
// dropped) applies at once. In Learn and Monitor, manifest rules apply as derived.
//
// A Service's ports are open to every address while the policy learns; out of Learn, a port that
// learned ingress rules allow is narrowed to them, and status.openPorts lists the ports that stay
// open and why (a public Service, no caller observed). A mesh proxy in the pods brings loopback deny rules for its admin and control ports, less the ports a loopback allow rule
// of another origin names. They apply in every mode, as derived: they only take away, and what drops
// one (the proxy gone from the template, a person's or a learned allow) leaves nothing to protect or
// is the owner's own choice.
package generator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/manifest"
	"podwall.io/podwall/policygen/workload"
)

// InjectLabel on a namespace opts its workloads in.
const InjectLabel = "podwall.io/inject"

// Options configure the generator; the zero value uses kube-system/kube-dns and cluster.local.
type Options struct {
	// DNS is the cluster DNS Service every workload may reach.
	DNS types.NamespacedName
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain string
	// Events records the proposals and their acceptance on the WorkloadPolicy; nil records none.
	Events events.EventRecorder
	// APIReader reads a pod's claimed owner when the cache has not seen it yet (see workload.Of), so
	// that a Deployment's new pod does not pass for a bare one; nil reads only the cache.
	APIReader client.Reader
}

// Generator reconciles workloads into WorkloadPolicies.
type Generator struct {
	client client.Client
	opts   Options
}

// New returns a generator writing through c (reads come from c's cache).
func New(c client.Client, opts Options) *Generator {
	if opts.DNS.Name == "" {
		opts.DNS = types.NamespacedName{Namespace: "kube-system", Name: "kube-dns"}
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	return &Generator{client: c, opts: opts}
}

// requestFor encodes a workload as a reconcile request: the name is "Kind/name".
func requestFor(k workload.Key) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Kind + "/" + k.Name}}
}

// Reconcile brings the workload's policy's manifest rules up to date.
func (g *Generator) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	kind, name, _ := strings.Cut(req.Name, "/")
	key := workload.Key{Namespace: req.Namespace, Kind: kind, Name: name}
	ns, err := g.optedIn(ctx, key.Namespace)
	if err != nil || ns == nil {
		return reconcile.Result{}, err
	}
	obj, err := workload.New(kind)
	if err != nil {
		return reconcile.Result{}, reconcile.TerminalError(err)
	}
	if err := g.client.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: name}, obj); err != nil {
		// A deleted workload's policy goes with it: the policy has the workload as its owner.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	own, err := g.isWorkload(ctx, key, obj)
	if err != nil || obj.GetDeletionTimestamp() != nil {
		return reconcile.Result{}, err
	}
	if !own {
		return reconcile.Result{}, g.dropAdopted(ctx, key, obj)
	}
	tpl, err := workload.Template(obj)
	if err != nil {
		return reconcile.Result{}, reconcile.TerminalError(err)
	}
	var svcs corev1.ServiceList
	if err := g.client.List(ctx, &svcs); err != nil {
		return reconcile.Result{}, fmt.Errorf("list services: %w", err)
	}
	eps, err := g.selectorlessSlices(ctx, svcs.Items)
	if err != nil {
		return reconcile.Result{}, err
	}
	in := manifest.Input{
		Namespace: key.Namespace, Template: tpl, Annotations: obj.GetAnnotations(), Services: svcs.Items,
		EndpointSlices:  eps,
		DNS:             v1.ServicePeer{Namespace: g.opts.DNS.Namespace, Name: g.opts.DNS.Name},
		ClusterDomain:   g.opts.ClusterDomain,
		NamespaceLabels: ns.Labels, NamespaceAnnotations: ns.Annotations,
	}
	return reconcile.Result{}, g.write(ctx, key, obj, in)
}

// selectorlessSlices lists the EndpointSlices of the Services without a selector (the only ones
// manifest rules read), not every slice of the cluster.
func (g *Generator) selectorlessSlices(ctx context.Context, svcs []corev1.Service) ([]discoveryv1.EndpointSlice, error) {
	var out []discoveryv1.EndpointSlice
	for _, svc := range svcs {
		if len(svc.Spec.Selector) > 0 {
			continue
		}
		var list discoveryv1.EndpointSliceList
		if err := g.client.List(ctx, &list, client.InNamespace(svc.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
			return nil, fmt.Errorf("list endpointslices of %s/%s: %w", svc.Namespace, svc.Name, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

// isWorkload reports whether obj, named by key, is a workload of its own. A pod is one when its
// verified workload is itself: a bare pod, or one whose claimed owner workload.Of refuses, which then
// gets a policy of its own instead of none. An owner that cannot be read now is an error, and the
// request is retried with backoff: a pod is not taken for a bare one for want of an answer.
//
// The answer needs no owner's event to be revisited: an owner the cache lacks is read from the API
// server, and what the check reads of it (UID, selector) never changes; what may change is the pod's
// own labels and references, and the pod's event brings it back here.
func (g *Generator) isWorkload(ctx context.Context, key workload.Key, obj client.Object) (bool, error) {
	if pod, ok := obj.(*corev1.Pod); ok {
		k, err := workload.Of(ctx, g.client, g.opts.APIReader, pod)
		return k == key, err
	}
	return workload.IsTop(obj), nil
}

// dropAdopted deletes the policy a pod had of its own while it was bare, now that a workload verified
// as its owner controls it (a ReplicaSet adopted it): its sidecar is served that workload's policy, and
// the old one would only be listed, measured and promoted for nothing. Only the policy the pod itself
// owns goes, and only as read (UID and resourceVersion preconditions); obj is not a pod: nothing.
func (g *Generator) dropAdopted(ctx context.Context, key workload.Key, obj client.Object) error {
	if _, ok := obj.(*corev1.Pod); !ok {
		return nil
	}
	var p v1.WorkloadPolicy
	err := g.client.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: workload.PolicyName(key.Kind, key.Name)}, &p)
	if err != nil || !slices.ContainsFunc(p.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == obj.GetUID() }) {
		return client.IgnoreNotFound(err)
	}
	err = g.client.Delete(ctx, &p, client.Preconditions{UID: &p.UID, ResourceVersion: &p.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete policy %s/%s of adopted pod: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// optedIn returns the namespace if it opted in, nil if not (or it is gone).
func (g *Generator) optedIn(ctx context.Context, name string) (*corev1.Namespace, error) {
	var ns corev1.Namespace
	if err := g.client.Get(ctx, types.NamespacedName{Name: name}, &ns); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if ns.Labels[InjectLabel] != "enabled" || ns.DeletionTimestamp != nil {
		return nil, nil
	}
	return &ns, nil
}

// write creates the policy or replaces its manifest rules, derived from in and the policy's mode and
// rules as they are now, retrying on conflicts with other writers (people editing their rules, the
// learner adding learned ones); it consumes the accept annotation, and records what waits as
// proposals and which Service ports stay open.
func (g *Generator) write(ctx context.Context, key workload.Key, owner client.Object, in manifest.Input) error {
	gvk, err := g.client.GroupVersionKindFor(owner)
	if err != nil {
		return fmt.Errorf("kind of %s: %w", key, err)
	}
	ownerRef := metav1.OwnerReference{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: owner.GetName(), UID: owner.GetUID()}
	name := types.NamespacedName{Namespace: key.Namespace, Name: workload.PolicyName(key.Kind, key.Name)}
	var p v1.WorkloadPolicy
	var gt gated
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p = v1.WorkloadPolicy{}
		err := g.client.Get(ctx, name, &p)
		if apierrors.IsNotFound(err) {
			in.Mode, in.Ingress, in.Loopback = policy.Learn, nil, nil
			rules := manifest.Derive(in)
			p = v1.WorkloadPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name, OwnerReferences: []metav1.OwnerReference{ownerRef}},
				Spec: v1.WorkloadPolicySpec{
					Workload: v1.WorkloadRef{Kind: key.Kind, Name: key.Name}, Mode: policy.Learn,
					Ingress: rules.Ingress, Egress: rules.Egress, Loopback: rules.Loopback,
				},
			}
			gt = gated{open: rules.Open}
			if err := g.client.Create(ctx, &p); err != nil {
				return fmt.Errorf("create policy %s: %w", name, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("get policy %s: %w", name, err)
		}
		before := p.Spec.DeepCopy()
		in.Mode, in.Ingress, in.Loopback = p.Spec.Mode, p.Spec.Ingress, p.Spec.Loopback
		gt = gate(&p, manifest.Derive(in))
		p.Spec.Ingress = manifest.ReplaceOrigin(p.Spec.Ingress, policy.OriginManifest, gt.ingress)
		p.Spec.Egress = manifest.ReplaceOrigin(p.Spec.Egress, policy.OriginManifest, gt.egress)
		p.Spec.Loopback = manifest.ReplaceLoopbackOrigin(p.Spec.Loopback, policy.OriginManifest, gt.loopback)
		gt.open = manifest.OpenIn(gt.open, p.Spec.Ingress)
		_, accepting := p.Annotations[v1.AcceptProposalsAnnotation]
		// Consumed in the same write as what they accepted.
		delete(p.Annotations, v1.AcceptProposalsAnnotation)
		delete(p.Annotations, v1.AcceptedByAnnotation)
		if equality.Semantic.DeepEqual(before, &p.Spec) && !accepting {
			return nil
		}
		if err := g.client.Update(ctx, &p); err != nil {
			return fmt.Errorf("update policy %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return g.writeStatus(ctx, &p, gt)
}

// SetupWithManager registers the controller and its watches.
func (g *Generator) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).Named("workloadpolicy-generator")
	for _, kind := range workload.Kinds {
		obj, _ := workload.New(kind)
		b = b.Watches(obj, g.enqueueSelf(kind))
	}
	return b.
		Watches(&corev1.Service{}, g.enqueueAll()).
		Watches(&discoveryv1.EndpointSlice{}, g.enqueueSelectorless()).
		Watches(&corev1.Namespace{}, g.enqueueNamespace()).
		Watches(&v1.WorkloadPolicy{}, enqueuePolicyWorkload()).
		Complete(g)
}
