//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/internal/testutil"
)

// TestPluginUI: `kubectl podwall ui` as a user runs it, built from cmd/kubectl-podwall, against the
// cluster's policygen. Signed in as a ServiceAccount bound to list WorkloadPolicies, the URL it prints
// serves the UI's page and, through the port-forward and policygen's verified TLS, the workloads list
// with the namespace's workload in it, whatever token the browser sends, and again through another
// pod once the one it forwards to is deleted; signed in as a
// ServiceAccount without that binding, policygen refuses the same request; and a request that reaches
// policygen without the proxy's token (through the API server's service proxy) is refused.
func TestPluginUI(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	createPod(t, ns, "web", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("web", "serve")}})
	viewer, nobody := "ui-viewer", "ui-nobody"
	for _, sa := range []string{viewer, nobody} {
		if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bindLister(t, ns, viewer)
	bin := buildPlugin(t)

	url, stderr := runPluginUI(t, bin, ns, viewer)
	page := get(t, url, "", http.StatusOK)
	if !strings.Contains(page, "<title>podwall</title>") {
		t.Errorf("%s is not the UI's page:\n%s", url, page)
	}
	// The UI's workloads list, once policygen has made the namespace's policy; a token the browser
	// sends is replaced by the proxy's.
	testutil.Eventually(t, time.Minute, func() error {
		var list struct {
			Workloads []struct{ Namespace, Workload string }
		}
		body := get(t, url+"api/workloads", "Bearer not-a-token", http.StatusOK)
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			return fmt.Errorf("workloads: %v: %s", err, body)
		}
		for _, w := range list.Workloads {
			if w.Namespace == ns && strings.HasSuffix(w.Workload, "/web") {
				return nil
			}
		}
		return fmt.Errorf("the workloads list has no %s/web: %s", ns, body)
	})

	failover(t, url, stderr)

	denied, _ := runPluginUI(t, bin, ns, nobody)
	if body := get(t, denied+"api/workloads", "", http.StatusForbidden); !strings.Contains(body, "do not let you list WorkloadPolicies") {
		t.Errorf("as %s: %s, want policygen's refusal", nobody, body)
	}
	// The API server's service proxy passes no caller's token on: policygen sees none.
	body, err := env.Client.CoreV1().RESTClient().Get().
		AbsPath("/api/v1/namespaces/podwall-system/services/https:podwall-policygen:8443/proxy/ui/api/workloads").
		DoRaw(context.Background())
	if !apierrors.IsUnauthorized(err) || !strings.Contains(string(body), "no bearer token") {
		t.Errorf("policygen without a token: %v: %s, want 401 no bearer token", err, body)
	}
}

// bindLister lets the ServiceAccount ns/sa list WorkloadPolicies in every namespace, which the UI
// asks of its readers, until the test ends.
func bindLister(t *testing.T, ns, sa string) {
	t.Helper()
	ctx := context.Background()
	name := ns + "-" + sa
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"podwall.io"}, Resources: []string{"workloadpolicies"}, Verbs: []string{"get", "list", "watch"}}}}
	if _, err := env.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}}}
	if _, err := env.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		env.Client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// buildPlugin builds kubectl-podwall from the repository.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-podwall")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kubectl-podwall")
	build.Dir = env.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kubectl-podwall: %v\n%s", err, out)
	}
	return bin
}

// runPluginUI runs `kubectl podwall ui` signed in as the ServiceAccount ns/sa until the test ends,
// and returns the URL it prints and its stderr.
func runPluginUI(t *testing.T, bin, ns, sa string) (string, *testutil.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, "--kubeconfig", env.Kubeconfig, "-n", ns, "ui", "--browser=false", "--service-account", sa)
	stderr := new(testutil.Buffer)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("kubectl podwall ui after Ctrl-C: %v\n%s", err, stderr.String())
		}
	})
	urls := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		urls <- strings.TrimPrefix(strings.TrimSpace(line), "podwall UI: ")
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case url := <-urls:
		if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/ui/") {
			t.Fatalf("kubectl podwall ui printed %q\n%s", url, stderr.String())
		}
		return url, stderr
	case <-time.After(time.Minute):
		t.Fatalf("kubectl podwall ui printed no URL in a minute:\n%s", stderr.String())
	}
	return "", nil
}

// failover deletes the policygen pod the command forwards to: the UI is served again through
// another, and the replacement becomes ready before the test goes on.
func failover(t *testing.T, url string, stderr *testutil.Buffer) {
	t.Helper()
	const prefix = "forwarding to policygen pod podwall-system/"
	_, rest, ok := strings.Cut(stderr.String(), prefix)
	if !ok {
		t.Fatalf("kubectl podwall ui names no pod:\n%s", stderr.String())
	}
	pod, _, _ := strings.Cut(rest, "\n")
	ctx := context.Background()
	if err := env.Client.CoreV1().Pods("podwall-system").Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A request through the port-forward to the gone pod fails, which ends that port-forward.
	testutil.Eventually(t, 2*time.Minute, func() error {
		resp, err := http.Get(url + "api/workloads")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("after pod %s was deleted: %s", pod, resp.Status)
		}
		if strings.Count(stderr.String(), prefix) < 2 {
			return fmt.Errorf("no second port-forward after pod %s was deleted:\n%s", pod, stderr.String())
		}
		return nil
	})
	testutil.Eventually(t, 3*time.Minute, func() error {
		d, err := env.Client.AppsV1().Deployments("podwall-system").Get(ctx, "podwall-policygen", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas {
			return fmt.Errorf("policygen: %d of %d replicas ready", d.Status.ReadyReplicas, *d.Spec.Replicas)
		}
		return nil
	})
}

// get fetches url, with the Authorization header auth when set, and checks the status.
func get(t *testing.T, url, auth string, want int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s, want %d: %s", url, resp.Status, want, body)
	}
	return string(body)
}
