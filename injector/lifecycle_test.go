package injector

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/testutil"
)

// The refusals of manifests/injector/lifecycle-policy.yaml, as the API server returns them.
const (
	refusedPodwallChange = "podwall: the podwall container of an injected pod cannot be changed"
	refusedAnnotation    = "podwall: the annotations podwall.io/status and podwall.io/allow-net-raw of an injected pod"
	refusedCaps          = "would be privileged or add capabilities (NET_ADMIN, NET_RAW, SYS_ADMIN, ...) that could change or bypass the firewall"
	refusedTarget        = "targets the podwall container, whose process holds the pod firewall"
	refusedMount         = "mounts a volume podwall reserves for its sidecar"
	refusedExec          = "podwall: no one may exec into or attach to the podwall container"
)

// podUserRole lets eve, a namespace user, do to pods what `kubectl debug`, `kubectl exec`, `kubectl
// attach` and `kubectl set image` need, and nothing else: no cluster-admin, no namespace or policy
// writes.
var podUserRole = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "create", "update", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers", "pods/resize"}, Verbs: []string{"get", "update", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach"}, Verbs: []string{"get", "create"}},
}

// testLifecycle applies manifests/injector/lifecycle-policy.yaml as it is and has eve, bound to
// podUserRole in the opted, strict and plain namespaces, try to reach the podwall container of an
// injected pod after its creation, through the real API server: each attempt is refused with
// podwall's message and the pod read back is unchanged. What the policy must not stop (her app
// container's image, a debug container without extra capabilities, exec into the app, anything in a
// namespace without podwall) goes through.
func testLifecycle(t *testing.T, c *cluster) {
	c.apply(t, "lifecycle-policy.yaml")
	eve := c.namespaceUser(t, "eve", podUserRole, "opted", "strict", "plain")

	// The API server loads a new policy in the background: wait until it refuses an image swap on a pod
	// of its own (a new image each try: a swap let through before would otherwise pass unchanged).
	probe := evesPod(t, eve, "opted", "probe")
	try := 0
	testutil.Eventually(t, 30*time.Second, func() error {
		try++
		err := setImage(eve, probe, sidecar.ContainerName, fmt.Sprintf("evil:v%d", try))
		if err == nil || !strings.Contains(err.Error(), refusedPodwallChange) {
			return fmt.Errorf("swap of the podwall image: %v, want %q", err, refusedPodwallChange)
		}
		return nil
	})
	// Burstable (the app requests CPU), so that a resize of podwall keeps the pod's QoS class, which the
	// API server's own validation would refuse.
	pod := evesPod(t, eve, "opted", "target", func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}
	})

	t.Run("pod updates", func(t *testing.T) { testLifecyclePodUpdates(t, c, eve, pod) })
	t.Run("ephemeral containers", func(t *testing.T) { testLifecycleEphemeral(t, c, eve) })
	t.Run("exec and attach", func(t *testing.T) { testLifecycleExec(t, eve, pod) })
	t.Run("namespace without podwall untouched", func(t *testing.T) {
		// A container of its own named podwall, in a namespace the injector leaves alone.
		plain := evesPod(t, eve, "plain", "own-podwall", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: sidecar.ContainerName, Image: "mine:v1"})
		})
		if err := setImage(eve, plain, sidecar.ContainerName, "mine:v2"); err != nil {
			t.Errorf("image change of a podwall container outside opted-in namespaces: %v", err)
		}
		if err := addDebugContainer(eve, plain, "debug", netAdminProfile); err != nil {
			t.Errorf("netadmin debug container outside opted-in namespaces: %v", err)
		}
		if err := connect(eve, plain, "exec", sidecar.ContainerName); !admittedConnect(err) {
			t.Errorf("exec into a container named podwall outside opted-in namespaces: %v, want admitted", err)
		}
	})
}

// evesPod creates a pod as eve and returns it as the API server stored it; in an opted-in namespace it
// must come back injected.
func evesPod(t *testing.T, eve kubernetes.Interface, ns, name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	p := testPod(mutate...)
	p.GenerateName, p.Name = "", name
	got, err := eve.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns != "plain" && !injected(got) {
		t.Fatalf("pod %s/%s not injected", ns, name)
	}
	return got
}

// setImage does what `kubectl set image pod/<pod> <container>=<image>` does: an UPDATE of the pod with
// one container's image changed, init containers included.
func setImage(cs kubernetes.Interface, pod *corev1.Pod, container, image string) error {
	return updatePod(cs, pod, func(p *corev1.Pod) {
		for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for i := range list {
				if list[i].Name == container {
					list[i].Image = image
				}
			}
		}
	})
}

// updatePod reads the pod, applies change and updates it.
func updatePod(cs kubernetes.Interface, pod *corev1.Pod, change func(*corev1.Pod)) error {
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	change(p)
	_, err = cs.CoreV1().Pods(pod.Namespace).Update(ctx, p, metav1.UpdateOptions{})
	return err
}

// storedPod reads the pod back as cluster admin.
func storedPod(t *testing.T, c *cluster, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := c.cs.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func testLifecyclePodUpdates(t *testing.T, c *cluster, eve kubernetes.Interface, pod *corev1.Pod) {
	before := storedPod(t, c, pod)
	refused := []struct {
		name   string
		change func(*corev1.Pod)
		want   string
	}{
		{name: "podwall image swapped", change: func(p *corev1.Pod) { p.Spec.InitContainers[0].Image = "evil:v1" }, want: refusedPodwallChange},
		{name: "status annotation removed", change: func(p *corev1.Pod) { delete(p.Annotations, AnnotationStatus) }, want: refusedAnnotation},
		{name: "NET_RAW opt-out added", change: func(p *corev1.Pod) { p.Annotations[AnnotationAllowNetRaw] = "true" }, want: refusedAnnotation},
		// The API server's own validation refuses this before the policy is asked; the policy holds
		// should that ever change.
		{name: "pod security context changed", change: func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsUser = ptr.To[int64](0) }},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := updatePod(eve, pod, tt.change)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("update: %v, want refused with %q", err, tt.want)
			}
			if diff := cmp.Diff(before.Spec, storedPod(t, c, pod).Spec); diff != "" {
				t.Errorf("stored pod changed (-before +after):\n%s", diff)
			}
		})
	}
	t.Run("podwall resized", func(t *testing.T) {
		p := storedPod(t, c, pod)
		p.Spec.InitContainers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m")}
		_, err := eve.CoreV1().Pods(pod.Namespace).UpdateResize(context.Background(), pod.Name, p, metav1.UpdateOptions{})
		if err == nil || !strings.Contains(err.Error(), refusedPodwallChange) {
			t.Fatalf("resize: %v, want refused with %q", err, refusedPodwallChange)
		}
	})
	t.Run("app image and labels still change", func(t *testing.T) {
		if err := setImage(eve, pod, "app", "app:v2"); err != nil {
			t.Fatalf("app image: %v", err)
		}
		if err := updatePod(eve, pod, func(p *corev1.Pod) { p.Labels = map[string]string{"tier": "web"} }); err != nil {
			t.Fatalf("labels: %v", err)
		}
		got := storedPod(t, c, pod)
		if got.Spec.Containers[0].Image != "app:v2" || got.Spec.InitContainers[0].Image != before.Spec.InitContainers[0].Image {
			t.Errorf("images app %s podwall %s, want app:v2 and podwall unchanged", got.Spec.Containers[0].Image, got.Spec.InitContainers[0].Image)
		}
	})
}

// The ephemeral containers `kubectl debug` adds with its profiles (k8s.io/kubectl/pkg/cmd/debug).
var (
	generalProfile  = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}}
	netAdminProfile = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}
)

// addDebugContainer adds an ephemeral container as `kubectl debug` does (UPDATE of
// pods/ephemeralcontainers) with sc as its security context; change, if any, edits it further.
func addDebugContainer(cs kubernetes.Interface, pod *corev1.Pod, name string, sc *corev1.SecurityContext, change ...func(*corev1.EphemeralContainer)) error {
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	e := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: name, Image: "busybox:1", Stdin: true, TTY: true, SecurityContext: sc.DeepCopy(),
		TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
	}}
	for _, ch := range change {
		ch(&e)
	}
	p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, e)
	_, err = cs.CoreV1().Pods(pod.Namespace).UpdateEphemeralContainers(ctx, pod.Name, p, metav1.UpdateOptions{})
	return err
}

func testLifecycleEphemeral(t *testing.T, c *cluster, eve kubernetes.Interface) {
	pod := evesPod(t, eve, "opted", "debugged")
	optedOut := evesPod(t, eve, "opted", "keeps-net-raw", allowNetRaw)
	strict := evesPod(t, eve, "strict", "debugged")
	shared := evesPod(t, eve, "opted", "shares-pids", func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = ptr.To(true) })
	tests := []struct {
		name   string
		pod    *corev1.Pod
		sc     *corev1.SecurityContext
		change func(*corev1.EphemeralContainer)
		want   string // refused with; empty: admitted
		// wantDrop is what the stored container drops when admitted.
		wantDrop []corev1.Capability
	}{
		{name: "netadmin profile", pod: pod, sc: netAdminProfile, want: refusedCaps},
		{name: "sysadmin profile", pod: pod, sc: &corev1.SecurityContext{Privileged: ptr.To(true)}, want: refusedCaps},
		{name: "SYS_ADMIN", pod: pod, sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"cap_sys_admin"}}}, want: refusedCaps},
		{name: "NET_RAW added", pod: pod, sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW"}}}, want: refusedCaps},
		{name: "NET_RAW added when strict, whatever the pod says", pod: strict, sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW"}}}, want: refusedCaps},
		{name: "podwall's token mounted", pod: pod, change: func(e *corev1.EphemeralContainer) {
			e.VolumeMounts = []corev1.VolumeMount{{Name: sidecar.VolumeToken, MountPath: "/stolen"}}
		}, want: refusedMount},
		{name: "podwall's cache mounted", pod: pod, change: func(e *corev1.EphemeralContainer) {
			e.VolumeMounts = []corev1.VolumeMount{{Name: sidecar.VolumeCache, MountPath: "/cache"}}
		}, want: refusedMount},
		{name: "target podwall", pod: pod, sc: generalProfile, change: func(e *corev1.EphemeralContainer) { e.TargetContainerName = sidecar.ContainerName }, want: refusedTarget},
		{name: "SYS_PTRACE where the PID namespace holds the sidecar", pod: shared, sc: generalProfile, want: refusedCaps},
		{name: "default profile", pod: pod, sc: generalProfile, wantDrop: []corev1.Capability{netRaw}},
		{name: "baseline profile, target app", pod: pod, change: func(e *corev1.EphemeralContainer) { e.TargetContainerName = "app" }, wantDrop: []corev1.Capability{netRaw}},
		{name: "restricted profile", pod: pod, sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, wantDrop: []corev1.Capability{"ALL"}},
		{name: "default profile, strict", pod: strict, sc: generalProfile, wantDrop: []corev1.Capability{netRaw}},
		{name: "NET_RAW kept where the pod kept it", pod: optedOut, sc: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW"}}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("debugger-%d", i)
			var change []func(*corev1.EphemeralContainer)
			if tt.change != nil {
				change = append(change, tt.change)
			}
			err := addDebugContainer(eve, tt.pod, name, tt.sc, change...)
			stored := storedPod(t, c, tt.pod)
			i := slices.IndexFunc(stored.Spec.EphemeralContainers, func(e corev1.EphemeralContainer) bool { return e.Name == name })
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("add: %v, want refused with %q", err, tt.want)
				}
				if i >= 0 {
					t.Errorf("refused ephemeral container %s stored", name)
				}
				return
			}
			if err != nil {
				t.Fatalf("add: %v", err)
			}
			if i < 0 {
				t.Fatalf("ephemeral container %s not stored", name)
			}
			var drop []corev1.Capability
			if sc := stored.Spec.EphemeralContainers[i].SecurityContext; sc != nil && sc.Capabilities != nil {
				drop = sc.Capabilities.Drop
			}
			if !slices.Equal(drop, tt.wantDrop) {
				t.Errorf("stored ephemeral container drops %v, want %v", drop, tt.wantDrop)
			}
		})
	}
}

// connect POSTs to the pod's exec or attach subresource for container, as `kubectl exec -c` and
// `kubectl attach -c` open their streams. Admission judges the request before the API server looks for
// the pod's node; this API server has no nodes, so a request admission lets through fails there.
func connect(cs kubernetes.Interface, pod *corev1.Pod, subresource, container string) error {
	req := cs.CoreV1().RESTClient().Post().Namespace(pod.Namespace).Resource("pods").Name(pod.Name).
		SubResource(subresource).Param("container", container).Param("stdout", "true")
	if subresource == "exec" {
		req = req.Param("command", "sh")
	}
	return req.Do(context.Background()).Error()
}

// admittedConnect says whether err is what a CONNECT that admission let through meets here: the pod
// has no node to stream from.
func admittedConnect(err error) bool {
	return err != nil && strings.Contains(err.Error(), "does not have a host assigned")
}

func testLifecycleExec(t *testing.T, eve kubernetes.Interface, pod *corev1.Pod) {
	for _, sub := range []string{"exec", "attach"} {
		if err := connect(eve, pod, sub, sidecar.ContainerName); err == nil || !strings.Contains(err.Error(), refusedExec) {
			t.Errorf("%s -c podwall: %v, want refused with %q", sub, err, refusedExec)
		}
		if err := connect(eve, pod, sub, "app"); !admittedConnect(err) {
			t.Errorf("%s -c app: %v, want admitted", sub, err)
		}
	}
}

// testLifecycleWithoutInjector runs once the injector's webhook configuration is gone (testLifecycle
// ran before): a debug container that would keep the runtime's NET_RAW, which the injector would have
// dropped, is refused by the policy alone.
func testLifecycleWithoutInjector(t *testing.T, c *cluster) {
	eve := kubernetes.NewForConfigOrDie(c.as("eve"))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "opted", Name: "debugged"}}
	const want = "podwall: ephemeral container late would hold NET_RAW"
	// The API server drops a deleted webhook configuration in the background.
	testutil.Eventually(t, 30*time.Second, func() error {
		err := addDebugContainer(eve, pod, "late", generalProfile)
		if err == nil || !strings.Contains(err.Error(), want) {
			return fmt.Errorf("add: %v, want refused with %q", err, want)
		}
		return nil
	})
}
