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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// Of returns the workload of a pod. It follows controller references up through ReplicaSets to
// Deployments and through Jobs to CronJobs, reading those objects from r; an owner of a kind it does not
// know ends the walk at the last known owner, and a pod without a controller is its own workload.
func Of(ctx context.Context, r client.Reader, pod *corev1.Pod) (Key, error) {
	key := Key{Namespace: pod.Namespace, Kind: "Pod", Name: pod.Name}
	ref := metav1.GetControllerOf(pod)
	for ref != nil {
		var parent client.Object
		switch ref.Kind {
		case "ReplicaSet":
			parent = &appsv1.ReplicaSet{}
		case "Job":
			parent = &batchv1.Job{}
		case "Deployment", "StatefulSet", "DaemonSet", "CronJob":
			return Key{Namespace: pod.Namespace, Kind: ref.Kind, Name: ref.Name}, nil
		default:
			return key, nil
		}
		key = Key{Namespace: pod.Namespace, Kind: ref.Kind, Name: ref.Name}
		err := r.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}, parent)
		if apierrors.IsNotFound(err) {
			return key, nil
		}
		if err != nil {
			return Key{}, fmt.Errorf("get %s %s: %w", ref.Kind, ref.Name, err)
		}
		ref = metav1.GetControllerOf(parent)
	}
	return key, nil
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
