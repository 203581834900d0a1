package injector

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// dropEphemeralNetRaw drops NET_RAW from each ephemeral container that pod (an UPDATE of
// pods/ephemeralcontainers, as `kubectl debug` sends it) adds to old, when old is injected: the runtime
// would grant it by default, and an ephemeral container shares the pod's network namespace as an app
// container does. So a plain `kubectl debug` works and holds what the pod's app containers hold. The
// pod's opt-out at creation (podwall.io/allow-net-raw, refused in strict namespaces) keeps it, as for
// app containers; a container that asks for it or is privileged keeps it here, and the
// ValidatingAdmissionPolicy podwall-injected-pods (manifests/injector/lifecycle-policy.yaml) refuses
// it, with what else an ephemeral container must not hold. Ephemeral containers already in old are left
// as they are: the API server refuses any change to them.
func dropEphemeralNetRaw(pod, old *corev1.Pod, ns Namespace) {
	if _, injected := old.Annotations[AnnotationStatus]; !injected || (allowsNetRaw(old) && !ns.Strict) {
		return
	}
	for i := range pod.Spec.EphemeralContainers {
		c := &pod.Spec.EphemeralContainers[i]
		existing := slices.ContainsFunc(old.Spec.EphemeralContainers, func(o corev1.EphemeralContainer) bool { return o.Name == c.Name })
		if !existing && !keepsNetRaw(c.SecurityContext) {
			c.SecurityContext = withoutNetRaw(c.SecurityContext)
		}
	}
}
