// Package netpolsync keeps, when policygen runs with --networkpolicy-sync, one networking.k8s.io/v1
// NetworkPolicy per WorkloadPolicy in Protect: a second layer, enforced by the cluster's network
// plugin, for clusters that want one. The NetworkPolicy is package export's translation of the policy,
// named podwall-<policy name>, labelled app.kubernetes.io/managed-by=podwall, controlled by the
// WorkloadPolicy (an owner reference, so that it is garbage-collected with it), and lists in the
// annotation podwall.io/export-lossy what it does not express.
//
// Only policies in Protect are synced: a NetworkPolicy always enforces, and in Learn or Monitor
// podwall only records or audits, so a synced object there would refuse what the policy lets through.
// When a policy leaves Protect its NetworkPolicy is deleted. Beside the policy's rules, the
// NetworkPolicy allows what podwall lets through whatever the rules say, so that the second layer
// does not cut the sidecar off: egress to policygen's policy API (PolicyAPI, PolicyAPIPort), without
// which the pod would keep its last policy forever, and ingress from anywhere to the sidecar's own port
// (its probes and metrics), which podwall opens in every mode; that port is named by its container
// port's name (api/sidecar.PortName), so that the network plugin finds it in each pod whatever port
// the platform configured.
//
// The syncer never touches a NetworkPolicy it did not create: an object of the same name that the
// WorkloadPolicy does not control is left as it is, and a Warning Event on the WorkloadPolicy says so.
// A synced object edited or deleted by hand is put back. It runs on the leader only, like everything
// that writes to the API server.
package netpolsync

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/sidecar"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/export"
)

// Event reasons on the WorkloadPolicy.
const (
	// ReasonConflict: a NetworkPolicy of the synced name exists that podwall did not create.
	ReasonConflict = "NetworkPolicyConflict"
	// ReasonRefused: the API server refused the NetworkPolicy (an invalid translation); it is retried
	// when the policy or what it names changes.
	ReasonRefused = "NetworkPolicyRefused"
)

// PolicyAPIRule names the egress rule added to every synced NetworkPolicy for the policy API.
const PolicyAPIRule = "podwall-policy-api"

// Options configure a Syncer; zero values take the defaults in parentheses.
type Options struct {
	// PolicyAPI is the Service the sidecars reach policygen through (podwall-system/podwall-policygen),
	// PolicyAPIPort the port its pods serve the policy API on (8443).
	PolicyAPI     v1.ServicePeer
	PolicyAPIPort int32
	// Events records conflicts and refusals on the WorkloadPolicy; nil records none.
	Events events.EventRecorder
}

// Syncer reconciles WorkloadPolicies into NetworkPolicies.
type Syncer struct {
	client client.Client
	opts   Options
}

// New returns a syncer writing through c (reads come from c's cache).
func New(c client.Client, opts Options) *Syncer {
	opts.PolicyAPI.Namespace = cmp.Or(opts.PolicyAPI.Namespace, "podwall-system")
	opts.PolicyAPI.Name = cmp.Or(opts.PolicyAPI.Name, "podwall-policygen")
	opts.PolicyAPIPort = cmp.Or(opts.PolicyAPIPort, 8443)
	return &Syncer{client: c, opts: opts}
}

// Reconcile brings the NetworkPolicy of the WorkloadPolicy req names in line with it: created or
// updated in Protect, deleted otherwise.
func (s *Syncer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var wp v1.WorkloadPolicy
	if err := s.client.Get(ctx, req.NamespacedName, &wp); err != nil {
		// A deleted policy's NetworkPolicy is the garbage collector's: the policy controls it.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if wp.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	key := client.ObjectKey{Namespace: wp.Namespace, Name: export.Name(wp.Name)}
	var cur networkingv1.NetworkPolicy
	err := s.client.Get(ctx, key, &cur)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("get NetworkPolicy %s: %w", key, err)
	}
	ours := exists && metav1.IsControlledBy(&cur, &wp)
	if wp.Spec.Mode != policy.Protect {
		if ours {
			return reconcile.Result{}, s.delete(ctx, &cur)
		}
		return reconcile.Result{}, nil
	}
	if exists && !ours {
		s.event(&wp, &cur, "Warning", ReasonConflict, "NetworkPolicy %s exists and podwall did not create it: it is left as it is and this policy is not synced; delete or rename it to let podwall keep %s", key, key.Name)
		return reconcile.Result{}, nil
	}
	want, err := s.desired(ctx, &wp)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !exists {
		err = s.client.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			// Created since the cache saw it; its event brings this policy back.
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, s.written(&wp, "create", key.String(), err)
	}
	before := cur.DeepCopy()
	cur.Spec = want.Spec
	cur.Labels = merged(cur.Labels, want.Labels)
	delete(cur.Annotations, v1.ExportLossyAnnotation)
	cur.Annotations = merged(cur.Annotations, want.Annotations)
	if equality.Semantic.DeepEqual(before, &cur) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, s.written(&wp, "update", key.String(), s.client.Update(ctx, &cur))
}

// desired is wp's NetworkPolicy as it should be.
func (s *Syncer) desired(ctx context.Context, wp *v1.WorkloadPolicy) (*networkingv1.NetworkPolicy, error) {
	withOwn := wp.DeepCopy()
	api := s.opts.PolicyAPI
	withOwn.Spec.Egress = append(withOwn.Spec.Egress, v1.Rule{Name: PolicyAPIRule,
		Peers: []v1.Peer{{Service: &api}}, Ports: []v1.Port{{Protocol: policy.TCP, Port: s.opts.PolicyAPIPort}}})
	np, notes, err := export.Build(ctx, s.client, withOwn)
	if err != nil {
		return nil, err
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromString(sidecar.PortName)
	np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}})
	np.TypeMeta = metav1.TypeMeta{}
	np.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "WorkloadPolicy",
		Name: wp.Name, UID: wp.UID, Controller: ptr.To(true)}}
	if len(notes) > 0 {
		np.Annotations = map[string]string{v1.ExportLossyAnnotation: strings.Join(notes, "\n")}
	}
	return np, nil
}

func (s *Syncer) delete(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	err := s.client.Delete(ctx, np, client.Preconditions{UID: &np.UID, ResourceVersion: &np.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete NetworkPolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	return nil
}

// written says how a create or update went: an invalid object is reported on the policy and not
// retried until something changes, any other error is retried.
func (s *Syncer) written(wp *v1.WorkloadPolicy, verb, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsInvalid(err):
		s.event(wp, nil, "Warning", ReasonRefused, "the API server refused NetworkPolicy %s: %v", name, err)
		return reconcile.TerminalError(fmt.Errorf("%s NetworkPolicy %s: %w", verb, name, err))
	}
	return fmt.Errorf("%s NetworkPolicy %s: %w", verb, name, err)
}

// event records on wp; related is the NetworkPolicy concerned, or nil.
func (s *Syncer) event(wp *v1.WorkloadPolicy, related runtime.Object, kind, reason, format string, args ...any) {
	if s.opts.Events != nil {
		s.opts.Events.Eventf(wp, related, kind, reason, "Sync", format, args...)
	}
}

// merged is base with over's entries set, base itself when over is empty.
func merged(base, over map[string]string) map[string]string {
	if len(over) == 0 {
		return base
	}
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, over)
	return out
}
