// Package workload finds the workload a pod belongs to (its top owner: Deployment, StatefulSet,
// DaemonSet, Job, CronJob, ReplicaSet, or the bare pod itself) and the pod template of a workload, which
// is what policies are keyed by and generated from.
package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Key identifies a workload.
type Key struct {
	Namespace string
	Kind      string
	Name      string
}

// String is "namespace/Kind/name", the form used in resolved policies and verdict lines.
func (k Key) String() string { return k.Namespace + "/" + k.Kind + "/" + k.Name }

// Kinds are the workload kinds policygen generates policies for.
var Kinds = []string{"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}

// PolicyName is the WorkloadPolicy's name for a workload: the lower-cased kind and the name, shortened
// with a hash suffix when that would exceed the 253 characters an object name may have.
func PolicyName(kind, name string) string {
	n := strings.ToLower(kind) + "-" + name
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:240] + "-" + hex.EncodeToString(sum[:])[:12]
}

// Of returns the workload of a pod: its top controller, the last of Owners.
func Of(ctx context.Context, cache, api client.Reader, pod *corev1.Pod) (Key, error) {
	owners, err := Owners(ctx, cache, api, pod)
	if err != nil {
		return Key{}, err
	}
	return owners[len(owners)-1], nil
}

// Owners returns the pod itself and its controllers, following controller references up through
// ReplicaSets to Deployments and through Jobs to CronJobs: the workloads the pod counts for. Its last
// element is the pod's workload. ownerReferences are written by whoever creates the object, a namespace
// user included, so a reference counts only as the controller that created the object would have
// written it: marked controller, naming an object of a kind that controls the referring kind, which
// exists with exactly the referenced UID and whose selector matches the referring object's labels (the
// condition under which a controller adopts an object; one releases what its selector does not match).
// Owners are read from cache and, when it does not have them with the referenced UID (a ReplicaSet just
// created, not yet seen by the informer), from api.
//
// A pod whose claimed owner fails any of these checks is its own workload and counts for no other:
// Owners is the pod alone. A pod controlled by a kind policygen does not know is its own workload too;
// a ReplicaSet or Job controlled by one ends the walk there. An owner that cannot be read for another
// reason than its absence (the API server unreachable) is an error, to retry: not knowing is no refusal.
//
// api may be nil to read only the cache. Then an owner the cache has not seen yet is refused for now,
// and the caller must verify again when the cache learns of it: Claimed lists the objects whose
// events may change the answer.
func Owners(ctx context.Context, cache, api client.Reader, pod *corev1.Pod) ([]Key, error) {
	bare := Key{Namespace: pod.Namespace, Kind: "Pod", Name: pod.Name}
	keys := []Key{bare}
	var child client.Object = pod
	for ref := metav1.GetControllerOf(child); ref != nil; ref = metav1.GetControllerOf(child) {
		if !known(ref) {
			break
		}
		owner, err := verify(ctx, cache, api, keys[len(keys)-1].Kind, child, ref)
		var no refusal
		if errors.As(err, &no) {
			log.FromContext(ctx).V(1).Info("claimed owner refused", "pod", bare.String(),
				"owner", ref.Kind+"/"+ref.Name, "uid", ref.UID, "reason", err.Error())
			return keys[:1], nil
		}
		if err != nil {
			return nil, fmt.Errorf("owners of pod %s: %w", bare, err)
		}
		keys = append(keys, Key{Namespace: pod.Namespace, Kind: ref.Kind, Name: ref.Name})
		child = owner
	}
	return keys, nil
}

// Claimed returns obj (a pod or a workload object, see KindOf) and the controllers its references
// claim, as written and unverified, up the chain as far as cache holds them: every workload whose
// verified pods (Owners) a change to obj may add or remove. A caller that verified against the cache
// alone re-verifies the workloads Claimed names whenever a pod or an owner object changes.
func Claimed(ctx context.Context, cache client.Reader, obj client.Object) []Key {
	ns := obj.GetNamespace()
	keys := []Key{{Namespace: ns, Kind: KindOf(obj), Name: obj.GetName()}}
	// A controller chain is at most three long (pod, ReplicaSet, Deployment); a longer claim is
	// followed no further.
	for len(keys) < 3 {
		ref := metav1.GetControllerOf(obj)
		if ref == nil || !known(ref) {
			break
		}
		keys = append(keys, Key{Namespace: ns, Kind: ref.Kind, Name: ref.Name})
		owner, _ := New(ref.Kind)
		if cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, owner) != nil {
			break
		}
		obj = owner
	}
	return keys
}

// refusal is why a claimed owner is not the pod's, as against an owner that could not be read.
type refusal struct{ reason string }

func (r refusal) Error() string { return r.reason }

func refused(format string, args ...any) error { return refusal{fmt.Sprintf(format, args...)} }

// groups are the API groups of the controller kinds Of follows.
var groups = map[string]string{
	"Deployment": appsv1.GroupName, "StatefulSet": appsv1.GroupName, "DaemonSet": appsv1.GroupName,
	"ReplicaSet": appsv1.GroupName, "Job": batchv1.GroupName, "CronJob": batchv1.GroupName,
}

// controls lists what each kind's controller creates, and so may control.
var controls = map[string]string{
	"StatefulSet": "Pod", "DaemonSet": "Pod", "ReplicaSet": "Pod", "Job": "Pod",
	"Deployment": "ReplicaSet", "CronJob": "Job",
}

// known reports whether ref names one of the workload kinds of apps/v1 and batch/v1.
func known(ref *metav1.OwnerReference) bool {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && groups[ref.Kind] != "" && gv.Group == groups[ref.Kind]
}

// verify returns the owner ref names if it controls child (of kind kind), a refusal if it does not,
// or another error if it could not be read.
func verify(ctx context.Context, cache, api client.Reader, kind string, child client.Object, ref *metav1.OwnerReference) (client.Object, error) {
	if controls[ref.Kind] != kind {
		return nil, refused("a %s does not control a %s", ref.Kind, kind)
	}
	nn := types.NamespacedName{Namespace: child.GetNamespace(), Name: ref.Name}
	owner, _ := New(ref.Kind)
	err := cache.Get(ctx, nn, owner)
	if (err != nil || owner.GetUID() != ref.UID) && api != nil {
		owner, _ = New(ref.Kind)
		err = api.Get(ctx, nn, owner)
	}
	if apierrors.IsNotFound(err) {
		return nil, refused("%s %s does not exist", ref.Kind, ref.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", ref.Kind, ref.Name, err)
	}
	if owner.GetUID() != ref.UID {
		return nil, refused("%s %s has UID %s", ref.Kind, ref.Name, owner.GetUID())
	}
	if sel := selectorOf(owner); sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, refused("selector of %s %s: %v", ref.Kind, ref.Name, err)
		}
		if !s.Matches(labels.Set(child.GetLabels())) {
			return nil, refused("selector of %s %s does not match the %s's labels", ref.Kind, ref.Name, kind)
		}
	}
	return owner, nil
}

// selectorOf is the selector with which a controller adopts what it controls; a CronJob has none and
// adopts its Jobs by reference alone.
func selectorOf(obj client.Object) *metav1.LabelSelector {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Selector
	case *appsv1.StatefulSet:
		return o.Spec.Selector
	case *appsv1.DaemonSet:
		return o.Spec.Selector
	case *appsv1.ReplicaSet:
		return o.Spec.Selector
	case *batchv1.Job:
		return o.Spec.Selector
	}
	return nil
}

// IsTop reports whether obj, a workload object other than a pod, is a workload of its own rather than
// one a known workload claims to control (the ReplicaSets of a Deployment, the Jobs of a CronJob). The
// claim is not verified here: when Owners refuses it, the object's pods are bare pods, each its own
// workload, and the object, which no pod counts for, needs no policy. Whether a pod is a workload of its
// own is what Of says.
func IsTop(obj client.Object) bool {
	ref := metav1.GetControllerOf(obj)
	return ref == nil || !known(ref)
}

// New returns an empty object of a workload kind, for Get.
func New(kind string) (client.Object, error) {
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}, nil
	case "StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "ReplicaSet":
		return &appsv1.ReplicaSet{}, nil
	case "Job":
		return &batchv1.Job{}, nil
	case "CronJob":
		return &batchv1.CronJob{}, nil
	case "Pod":
		return &corev1.Pod{}, nil
	}
	return nil, fmt.Errorf("kind %q is not a workload", kind)
}

// KindOf is the workload kind of obj, an object New returns, or "" for any other object.
func KindOf(obj client.Object) string {
	switch obj.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *appsv1.StatefulSet:
		return "StatefulSet"
	case *appsv1.DaemonSet:
		return "DaemonSet"
	case *appsv1.ReplicaSet:
		return "ReplicaSet"
	case *batchv1.Job:
		return "Job"
	case *batchv1.CronJob:
		return "CronJob"
	case *corev1.Pod:
		return "Pod"
	}
	return ""
}

// Template returns a workload's pod template; for a bare pod, its labels, annotations and spec.
func Template(obj client.Object) (*corev1.PodTemplateSpec, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template, nil
	case *appsv1.StatefulSet:
		return &o.Spec.Template, nil
	case *appsv1.DaemonSet:
		return &o.Spec.Template, nil
	case *appsv1.ReplicaSet:
		return &o.Spec.Template, nil
	case *batchv1.Job:
		return &o.Spec.Template, nil
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template, nil
	case *corev1.Pod:
		return &corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: o.Labels, Annotations: o.Annotations},
			Spec:       o.Spec,
		}, nil
	}
	return nil, fmt.Errorf("%T is not a workload", obj)
}

// NewList returns an empty list of a workload kind, for List.
func NewList(kind string) (client.ObjectList, error) {
	switch kind {
	case "Deployment":
		return &appsv1.DeploymentList{}, nil
	case "StatefulSet":
		return &appsv1.StatefulSetList{}, nil
	case "DaemonSet":
		return &appsv1.DaemonSetList{}, nil
	case "ReplicaSet":
		return &appsv1.ReplicaSetList{}, nil
	case "Job":
		return &batchv1.JobList{}, nil
	case "CronJob":
		return &batchv1.CronJobList{}, nil
	case "Pod":
		return &corev1.PodList{}, nil
	}
	return nil, fmt.Errorf("kind %q is not a workload", kind)
}
