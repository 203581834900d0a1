package policyapi

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apisidecar "podwall.io/podwall/api/sidecar"
)

// ReasonConfigRefused is the reason of the Warning Event on a pod whose sidecar refused the workload's
// config file (the ConfigMap podwall-config): it set a key only the platform sets, or a looser value.
const ReasonConfigRefused = "ConfigRefused"

// maxEventMessage bounds an Event's message, as the API server's events.k8s.io note is bounded.
const maxEventMessage = 1024

// recordRefusal records a Warning Event on the caller's pod that its config file was refused. The
// sidecar cannot: it holds no Kubernetes credentials, only its token for policygen. A failure is
// logged and the refusal told again with the next report.
func (s *Server) recordRefusal(ctx context.Context, id Identity, message string) {
	message = "podwall's sidecar refused the workload's config file, the ConfigMap " + apisidecar.VolumeConfig + ": " + message
	if len(message) > maxEventMessage {
		message = message[:maxEventMessage]
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: id.Pod.Namespace, GenerateName: id.Pod.Name + "."},
		InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: id.Pod.Namespace,
			Name: id.Pod.Name, UID: id.UID},
		Reason: ReasonConfigRefused, Message: message, Type: corev1.EventTypeWarning, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: "podwall-policygen"},
		ReportingController: "podwall.io/policygen", ReportingInstance: s.opts.Replica,
	}
	if err := s.writer.Create(ctx, ev); err != nil {
		s.log.Error(err, "record the config refusal on the pod", "pod", id.Pod.String())
		s.sidecars.untold(id)
	}
}
