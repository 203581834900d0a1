package injector

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// TestDropEphemeralNetRaw checks which ephemeral containers lose NET_RAW; what the API server stores
// is TestAgainstAPIServer's.
func TestDropEphemeralNetRaw(t *testing.T) {
	dropped := &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{netRaw}}}
	ephemeral := func(name string, sc *corev1.SecurityContext) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, SecurityContext: sc}}
	}
	injectedPod := func(annotations map[string]string, existing ...corev1.EphemeralContainer) *corev1.Pod {
		p := &corev1.Pod{}
		p.Annotations = map[string]string{AnnotationStatus: `{"layout":"native"}`}
		for k, v := range annotations {
			p.Annotations[k] = v
		}
		p.Spec.EphemeralContainers = existing
		return p
	}
	earlier := ephemeral("earlier", nil)
	tests := []struct {
		name string
		old  *corev1.Pod
		ns   Namespace
		add  *corev1.SecurityContext
		want *corev1.SecurityContext
	}{
		{name: "plain debug container", old: injectedPod(nil), add: nil, want: dropped},
		{name: "its own settings kept", old: injectedPod(nil),
			add:  &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000), Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}},
			want: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000), Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}, Drop: []corev1.Capability{netRaw}}}},
		{name: "drops all already", old: injectedPod(nil),
			add:  &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			want: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}},
		{name: "asks for NET_RAW: left for the policy to refuse", old: injectedPod(nil),
			add:  &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{netRaw}}},
			want: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{netRaw}}}},
		{name: "pod kept NET_RAW", old: injectedPod(map[string]string{AnnotationAllowNetRaw: "true"}), add: nil, want: nil},
		{name: "pod kept NET_RAW, namespace strict since", old: injectedPod(map[string]string{AnnotationAllowNetRaw: "true"}), ns: Namespace{Strict: true}, add: nil, want: dropped},
		{name: "pod not injected", old: &corev1.Pod{}, add: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := tt.old.DeepCopy()
			pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, ephemeral("debugger", tt.add))
			dropEphemeralNetRaw(pod, tt.old, tt.ns)
			if diff := cmp.Diff(tt.want, pod.Spec.EphemeralContainers[len(pod.Spec.EphemeralContainers)-1].SecurityContext); diff != "" {
				t.Errorf("new container's security context (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("containers already there are left alone", func(t *testing.T) {
		old := injectedPod(nil, earlier)
		pod := old.DeepCopy()
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, ephemeral("debugger", nil))
		dropEphemeralNetRaw(pod, old, Namespace{})
		if sc := pod.Spec.EphemeralContainers[0].SecurityContext; sc != nil {
			t.Errorf("earlier container changed: %+v", sc)
		}
	})
}
