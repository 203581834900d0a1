package resolve

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ControllerIndex is the cache index of pods, ReplicaSets and Jobs by their controller, "Kind/name",
// so that a workload's pods are found without scanning the namespace.
const ControllerIndex = "podwall.io/controller"

// IPIndex is the cache index of pods by pod IPs and of Services by cluster IPs, so that a reported
// address is named without scanning.
const IPIndex = "podwall.io/ip"

// controllerKey is the controller index value of obj's controller, "" when it has none.
func controllerKey(obj client.Object) string {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return ref.Kind + "/" + ref.Name
	}
	return ""
}

// Index registers the indexes policygen lists by; call it before the cache starts.
func Index(ctx context.Context, idx client.FieldIndexer) error {
	byController := func(obj client.Object) []string {
		if k := controllerKey(obj); k != "" {
			return []string{k}
		}
		return nil
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &appsv1.ReplicaSet{}, &batchv1.Job{}} {
		if err := idx.IndexField(ctx, obj, ControllerIndex, byController); err != nil {
			return fmt.Errorf("index %T by controller: %w", obj, err)
		}
	}
	podIPs := func(obj client.Object) []string {
		var ips []string
		for _, ip := range obj.(*corev1.Pod).Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return ips
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, IPIndex, podIPs); err != nil {
		return fmt.Errorf("index pods by IP: %w", err)
	}
	clusterIPs := func(obj client.Object) []string { return obj.(*corev1.Service).Spec.ClusterIPs }
	if err := idx.IndexField(ctx, &corev1.Service{}, IPIndex, clusterIPs); err != nil {
		return fmt.Errorf("index services by IP: %w", err)
	}
	return nil
}
