//go:build e2e

package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/e2e/internal/stack"
)

// TestDebugRefused: a namespace user who may debug, exec into and attach to the pods of an opted-in
// namespace (a Role, not cluster-admin) tries the ways into an injected pod's firewall that kubectl
// offers after the pod started. `kubectl debug --profile=netadmin` and `kubectl exec -c podwall` are
// refused with podwall's message (lifecycle-policy.yaml of manifests/injector), and nothing is added to
// the pod; a plain `kubectl debug` runs, without NET_RAW (the injector drops it as from app
// containers: its packet socket and forged marks are refused inside the pod), and exec into the app
// still works.
func TestDebugRefused(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	const user = "e2e-developer"
	namespaceUser(t, ns, user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers"}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach"}, Verbs: []string{"get", "create"}},
	})
	createPod(t, ns, "app", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("app", "serve")}})
	as := func(args ...string) (string, error) {
		return kubectlOut(append([]string{"--as", user, "-n", ns}, args...)...)
	}

	out, err := as("debug", "app", "--profile=netadmin", "--image="+stack.WorkloadImage, "-c", "netdebug", "--", "/workload", "pause")
	if want := "podwall: ephemeral container netdebug would be privileged or add capabilities (NET_ADMIN, NET_RAW"; err == nil || !strings.Contains(out, want) {
		t.Errorf("kubectl debug --profile=netadmin: %v: %s\nwant refused with %q", err, out, want)
	}
	out, err = as("exec", "app", "-c", "podwall", "--", "/podwall-sidecar", "--help")
	if want := "podwall: no one may exec into or attach to the podwall container"; err == nil || !strings.Contains(out, want) {
		t.Errorf("kubectl exec -c podwall: %v: %s\nwant refused with %q", err, out, want)
	}

	out, err = as("debug", "app", "--image="+stack.WorkloadImage, "-c", "debugger", "--", "/workload", "attack", "-addr", "127.0.0.1:8080")
	if err != nil {
		t.Fatalf("kubectl debug (default profile): %v: %s", err, out)
	}
	waitLog(t, ns, "app", "debugger", 2*time.Minute, "attack packet-socket refused")
	if marks := logLines(t, ns, "app", "debugger", "attack mark=", "connected"); len(marks) > 0 {
		t.Errorf("the debug container set marks:\n%s", strings.Join(marks, "\n"))
	}
	pod, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range pod.Spec.EphemeralContainers {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"debugger"}) {
		t.Errorf("ephemeral containers %v, want only debugger", names)
	}
	if out, err := as("exec", "app", "-c", "app", "--", "/workload", "connect", "-count", "1", "-url", "http://127.0.0.1:8080/"); err != nil {
		t.Errorf("kubectl exec -c app: %v: %s", err, out)
	}
}
