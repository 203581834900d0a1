package policyapi

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apisidecar "podwall.io/podwall/api/sidecar"
)

// ReasonConfigRefused is the reason of the Warning Event on a pod whose sidecar refused the workload's
// config file (the ConfigMap podwall-config): it set a key only the platform sets, or a looser value.
const ReasonConfigRefused = "ConfigRefused"

// maxEventNote bounds an Event's note, as the API server's events.k8s.io validation does.
const maxEventNote = 1024

// recordRefusal records a Warning Event on the caller's pod that its config file was refused. The
// sidecar cannot: it holds no Kubernetes credentials, only its token for policygen.
func (s *Server) recordRefusal(id Identity, message string) {
	if s.opts.Events == nil {
		return
	}
	message = "podwall's sidecar refused the workload's config file, the ConfigMap " + apisidecar.VolumeConfig + ": " + message
	if len(message) > maxEventNote {
		message = message[:maxEventNote]
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: id.Pod.Namespace, Name: id.Pod.Name, UID: id.UID}}
	s.opts.Events.Eventf(pod, nil, corev1.EventTypeWarning, ReasonConfigRefused, "Refuse", "%s", message)
}
