// Package workload finds the workload a pod belongs to (its top owner: Deployment, StatefulSet,
// DaemonSet, Job, CronJob, ReplicaSet, or the bare pod itself) and the pod template of a workload, which
// is what policies are keyed by and generated from.
package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
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

// Of returns the workload of a pod: its top controller, following controller references up through
// ReplicaSets to Deployments and through Jobs to CronJobs. ownerReferences are written by whoever
// creates the object, a namespace user included, so a reference counts only as the controller that
// created the object would have written it: marked controller, naming an object of a kind that controls
// the referring kind, which exists with exactly the referenced UID and whose selector matches the
// referring object's labels (the condition under which a controller adopts an object; one releases
// what its selector does not match). Owners are read from cache and, when it does not have them with
// the referenced UID (a ReplicaSet just created, not yet seen by the informer), from api, which may be
// nil to read only the cache.
//
// A pod whose claimed owner fails any of these checks, or cannot be read, is its own workload, never
// the claimed owner's. A pod controlled by a kind policygen does not know is its own workload too; a
// ReplicaSet or Job controlled by one ends the walk there.
func Of(ctx context.Context, cache, api client.Reader, pod *corev1.Pod) Key {
	bare := Key{Namespace: pod.Namespace, Kind: "Pod", Name: pod.Name}
	key := bare
	var child client.Object = pod
	for ref := metav1.GetControllerOf(child); ref != nil; ref = metav1.GetControllerOf(child) {
		if !known(ref) {
			break
		}
		owner, err := verify(ctx, cache, api, key.Kind, child, ref)
		if err != nil {
			log.FromContext(ctx).V(1).Info("claimed owner refused", "pod", bare.String(),
				"owner", ref.Kind+"/"+ref.Name, "uid", ref.UID, "reason", err.Error())
			return bare
		}
		key = Key{Namespace: pod.Namespace, Kind: ref.Kind, Name: ref.Name}
		child = owner
	}
	return key
}

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

// verify returns the owner ref names if it controls child (of kind kind), or why not.
func verify(ctx context.Context, cache, api client.Reader, kind string, child client.Object, ref *metav1.OwnerReference) (client.Object, error) {
	if controls[ref.Kind] != kind {
		return nil, fmt.Errorf("a %s does not control a %s", ref.Kind, kind)
	}
	nn := types.NamespacedName{Namespace: child.GetNamespace(), Name: ref.Name}
	owner, _ := New(ref.Kind)
	err := cache.Get(ctx, nn, owner)
	if (err != nil || owner.GetUID() != ref.UID) && api != nil {
		owner, _ = New(ref.Kind)
		err = api.Get(ctx, nn, owner)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", ref.Kind, ref.Name, err)
	}
	if owner.GetUID() != ref.UID {
		return nil, fmt.Errorf("%s %s has UID %s", ref.Kind, ref.Name, owner.GetUID())
	}
	if sel := selectorOf(owner); sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("selector of %s %s: %w", ref.Kind, ref.Name, err)
		}
		if !s.Matches(labels.Set(child.GetLabels())) {
			return nil, fmt.Errorf("selector of %s %s does not match the %s's labels", ref.Kind, ref.Name, kind)
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

// IsTop reports whether obj is a workload of its own, rather than one a known workload controls (the
// ReplicaSets of a Deployment, the Jobs of a CronJob, the pods of any of them).
func IsTop(obj client.Object) bool {
	ref := metav1.GetControllerOf(obj)
	if ref == nil {
		return true
	}
	switch ref.Kind {
	case "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet":
		return false
	}
	// A pod controlled by something we do not know is treated as its own workload.
	_, isPod := obj.(*corev1.Pod)
	return isPod
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
