//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/e2e/internal/stack"
	"podwall.io/podwall/internal/testutil"
)

const injectLabel = "podwall.io/inject"

var deployed struct {
	once sync.Once
	err  error
}

// requirePodwall deploys podwall (once for all tests) through `kubectl apply -k manifests/`.
func requirePodwall(t *testing.T) {
	t.Helper()
	for _, b := range []string{"podwall-sidecar", "podwall-injector", "podwall-policygen"} {
		needImage(t, b)
	}
	deployed.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deployed.err = stack.Deploy(ctx, env.Cluster, env.root)
	})
	if deployed.err != nil {
		out, _ := kubectlOut("-n", "podwall-system", "get", "pods,events", "-o", "wide")
		t.Fatalf("deploy podwall: %v\n%s", deployed.err, out)
	}
}

// deployment creates a one-replica Deployment whose pods carry app=<name> (and e2e=<name>).
func deployment(t *testing.T, ns, name string, spec corev1.PodSpec) {
	t.Helper()
	replicated(t, ns, name, 1, spec)
}

// replicated creates a Deployment of n replicas whose pods carry app=<name> (and e2e=<name>).
func replicated(t *testing.T, ns, name string, n int32, spec corev1.PodSpec) {
	t.Helper()
	labels := map[string]string{"app": name, "e2e": name}
	grace := int64(1)
	spec.TerminationGracePeriodSeconds = &grace
	_, err := env.Client.AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s: %v", name, err)
	}
}

// podOf waits for the Deployment's one running, ready pod other than the excluded ones.
func podOf(t *testing.T, ns, app string, exclude ...string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	testutil.Await(t, "a ready pod of "+ns+"/"+app, 2*time.Minute, func() error {
		list, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		var names []string
		for i := range list.Items {
			p := &list.Items[i]
			names = append(names, p.Name+":"+string(p.Status.Phase))
			if p.DeletionTimestamp != nil || contains(exclude, p.Name) || p.Status.Phase != corev1.PodRunning || !ready(p) {
				continue
			}
			pod = p
			return nil
		}
		sort.Strings(names)
		return fmt.Errorf("pods: %v", names)
	})
	return pod
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// workloadPolicy reads a WorkloadPolicy through kubectl, as a user would.
func workloadPolicy(t *testing.T, ns, name string) (*v1alpha1.WorkloadPolicy, error) {
	t.Helper()
	out, err := kubectlOut("-n", ns, "get", "workloadpolicy", name, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	var p v1alpha1.WorkloadPolicy
	return &p, json.Unmarshal([]byte(out), &p)
}

// setMode switches a workload's policy to mode.
func setMode(t *testing.T, ns, name string, mode policy.Mode) {
	t.Helper()
	kubectl(t, "-n", ns, "patch", "workloadpolicy", name, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"mode":%q}}`, mode))
}

// verdictLines returns the verdict lines of the pod's podwall sidecar, those logged since since if it is
// not zero. The sidecar's diagnostics, which share its log, are left out.
func verdictLines(t *testing.T, ns, pod string, since time.Time) []verdict.Line {
	t.Helper()
	args := []string{"-n", ns, "logs", pod, "-c", "podwall"}
	if !since.IsZero() {
		args = append(args, "--since-time", since.UTC().Format(time.RFC3339))
	}
	var lines []verdict.Line
	for _, text := range strings.Split(kubectl(t, args...), "\n") {
		var l verdict.Line
		if json.Unmarshal([]byte(text), &l) == nil && l.Verdict.Valid() {
			lines = append(lines, l)
		}
	}
	return lines
}

// logLines returns the container's log lines (kubectl logs) that contain every one of parts.
func logLines(t *testing.T, ns, pod, container string, parts ...string) []string {
	t.Helper()
	var found []string
	for _, line := range strings.Split(kubectl(t, "-n", ns, "logs", pod, "-c", container), "\n") {
		if containsAll(line, parts) {
			found = append(found, line)
		}
	}
	return found
}

// execConnect runs one connection attempt from inside the pod's container and returns its line.
func execConnect(t *testing.T, ns, pod, container, url string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, "-n", ns, "exec", pod, "-c", container, "--",
		"/workload", "connect", "-count", "1", "-timeout", "5s", "-url", url))
}

// containerID is the runtime's id of the pod's container (init containers included).
func containerID(pod *corev1.Pod, name string) string {
	for _, st := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if st.Name == name {
			_, id, _ := strings.Cut(st.ContainerID, "://")
			return id
		}
	}
	return ""
}

// killContainer kills the container's processes outright (SIGKILL), as a crash would.
func killContainer(t *testing.T, id string) {
	t.Helper()
	out, err := exec.Command("ctr", "--address", env.ContainerdSocket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).CombinedOutput()
	if err != nil {
		t.Fatalf("kill container %s: %v: %s", id, err, out)
	}
}
