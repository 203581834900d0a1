//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
)

// TestConfigMapAttack is issue 12's attack on a real cluster: with the client's WorkloadPolicy in
// Protect, a namespace user (a Role that may write ConfigMaps, nothing more) creates the workload's
// ConfigMap podwall-config with mode: Learn and fail-mode: open. The sidecar refuses the file, says so
// in its log and in a Warning Event ConfigRefused on the pod, and nothing unlisted gets through: the
// server never logs a request on its unlisted port.
func TestConfigMapAttack(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	service(t, ns, "server", 8080)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("client", "serve", "-addr", ":8080")}})
	server, client := podOf(t, ns, "server"), podOf(t, ns, "client")
	unlistedURL := fmt.Sprintf("http://%s:9090/", server.Status.PodIP)

	testutil.Await(t, "the client's WorkloadPolicy", time.Minute, func() error {
		_, err := workloadPolicy(t, ns, "deployment-client")
		return err
	})
	setMode(t, ns, "deployment-client", policy.Protect)
	waitLog(t, ns, client.Name, "podwall", time.Minute, "policy applied", `"mode":"Protect"`)
	unlistedFails := func(when string) {
		t.Helper()
		if line := execConnect(t, ns, client.Name, "client", unlistedURL); !strings.Contains(line, "connect fail") {
			t.Fatalf("%s: unlisted connection: %s, want a failure", when, line)
		}
	}
	unlistedFails("under Protect")

	tenant := "tenant"
	namespaceUser(t, ns, tenant, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create", "update", "get"}}})
	kubectl(t, "--as", tenant, "-n", ns, "create", "configmap", "podwall-config",
		"--from-literal=config.yaml=mode: Learn\nfail-mode: open\n")

	// The kubelet delivers the ConfigMap within its sync period; until the sidecar refuses it, and
	// after, every unlisted attempt fails.
	testutil.Await(t, "the sidecar's log refuses the tenant's ConfigMap", 4*time.Minute, func() error {
		unlistedFails("after the tenant's ConfigMap")
		if len(logLines(t, ns, client.Name, "podwall", "workload config file refused", "fail-mode", "only the platform sets it")) == 0 {
			return errors.New("no refusal in the sidecar's log yet")
		}
		return nil
	})
	for range 10 {
		unlistedFails("after the refusal")
	}
	waitLog(t, ns, client.Name, "podwall", time.Minute, `"notice":"config-refused"`)

	testutil.Await(t, "a ConfigRefused Warning Event on the client pod", 2*time.Minute, func() error {
		out, err := kubectlOut("-n", ns, "get", "events", "--field-selector",
			"involvedObject.name="+client.Name+",reason=ConfigRefused,type=Warning", "-o", "jsonpath={.items[*].message}")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "fail-mode") || !strings.Contains(out, "podwall-platform") {
			return fmt.Errorf("events: %q", out)
		}
		return nil
	})
	if leaks := logLines(t, ns, podOf(t, ns, "server").Name, "server", ":9090 path="); len(leaks) > 0 {
		t.Errorf("the server accepted unlisted connections:\n%s", strings.Join(leaks, "\n"))
	}
}
