package injector

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/sidecar"
)

// testTenantPods has mallory, a namespace user whose Role lets her create pods in the opted and strict
// namespaces and nothing else, create pods that reach for the sidecar's volumes or processes through the
// real API server and webhook: each is refused with podwall's message and nothing is stored, or (hostPID
// outside strict namespaces) injected with a warning.
func testTenantPods(t *testing.T, c *cluster) {
	ctx := context.Background()
	c.namespaceUser(t, "mallory", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}}, "opted", "strict")
	mallory := c.as("mallory")

	tokenMount := []corev1.VolumeMount{{Name: sidecar.VolumeToken, MountPath: "/stolen"}}
	tests := []struct {
		name        string
		ns          string
		pod         *corev1.Pod
		wantDenied  string
		wantWarning string
	}{
		{name: "app mounts a volume named as podwall's token", ns: "opted", pod: testPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: sidecar.VolumeToken, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = tokenMount
		}), wantDenied: `podwall: the pod declares its own volume "podwall-token" (podwall's name for the sidecar's token for policygen); ` +
			`container "app" mounts volume "podwall-token" (the sidecar's token for policygen): podwall reserves the volume names ` +
			`podwall-config, podwall-token, podwall-cache for its sidecar, and no app container may mount them; give the pod's volume another name`},
		{name: "forged status to mount the injected token", ns: "opted", pod: testPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationStatus: `{"layout":"native","initContainers":["podwall"],"volumes":["podwall-token"]}`}
			p.Spec.Volumes = []corev1.Volume{{Name: sidecar.VolumeToken, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "setup:v1", VolumeMounts: tokenMount}}
		}), wantDenied: `podwall: init container "setup" mounts volume "podwall-token" (the sidecar's token for policygen)`},
		{name: "hostPID when strict", ns: "strict", pod: testPod(func(p *corev1.Pod) { p.Spec.HostPID = true }),
			wantDenied: `podwall: namespace strict is strict: the pod sets hostPID: true (the node's PID namespace), which lets an app process signal or trace the sidecar's process; remove it`},
		{name: "shareProcessNamespace when strict", ns: "strict", pod: testPod(func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = ptr.To(true) }),
			wantDenied: `podwall: namespace strict is strict: the pod sets shareProcessNamespace: true`},
		{name: "hostNetwork when strict", ns: "strict", pod: testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			wantDenied: `podwall: namespace strict is strict and refuses pods it cannot guard: a hostNetwork pod shares the node's network`},
		{name: "hostPID elsewhere", ns: "opted", pod: testPod(func(p *corev1.Pod) { p.Spec.HostPID = true }),
			wantWarning: `podwall: the pod sets hostPID: true (the node's PID namespace), which lets an app process signal or trace the sidecar's process`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pod.GenerateName, tt.pod.Name = "", "mallory-"+string(rune('a'+i))
			got, warns, err := createPodAs(mallory, tt.ns, tt.pod)
			if tt.wantDenied != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantDenied) {
					t.Fatalf("error %v, want a denial saying %q", err, tt.wantDenied)
				}
				if _, err := c.cs.CoreV1().Pods(tt.ns).Get(ctx, tt.pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("refused pod read back: %v, want not found", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !injected(got) {
				t.Errorf("not injected: init containers %v", names(got.Spec.InitContainers))
			}
			if w := strings.Join(warns, "\n"); !strings.Contains(w, tt.wantWarning) {
				t.Errorf("warnings %q, want %q", warns, tt.wantWarning)
			}
		})
	}
}
