//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/e2e/internal/stack"
	"podwall.io/podwall/internal/testutil"
)

// TestUninstall removes podwall the way the README says, `kubectl delete -k manifests/`, from a
// cluster where an opted-in namespace runs a client in Protect and a server. Throughout the command,
// pods of the opted-in namespace can be created (the webhook configuration goes first); afterwards
// they are created without a sidecar, podwall's objects and its CRD are gone, and the client's
// sidecar, which policygen no longer serves, still enforces the policy it holds: an unlisted
// connection is refused, logged, and never reaches the server.
//
// It reinstalls podwall when it ends, so that tests running after it (in file order, or with -run)
// find the stack as requirePodwall left it.
func TestUninstall(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	server := podOf(t, ns, "server")
	unlisted := netip.AddrPortFrom(netip.MustParseAddr(server.Status.PodIP), 9090)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("client", "serve", "-addr", ":8080")}})
	client := podOf(t, ns, "client")
	testutil.Await(t, "the client's WorkloadPolicy", time.Minute, func() error {
		_, err := workloadPolicy(t, ns, "deployment-client")
		return err
	})
	setMode(t, ns, "deployment-client", policy.Protect)
	waitLog(t, ns, client.Name, "podwall", time.Minute, "policy applied", `"mode":"Protect"`)

	t.Cleanup(func() { reinstall(t) })
	probe := createPodsThroughout(ns)
	start := time.Now()
	kubectl(t, "delete", "-k", filepath.Join(env.root, "manifests"), "--timeout=3m")
	if failed := probe(); len(failed) > 0 {
		t.Errorf("pods of the opted-in namespace refused during the uninstall (%d):\n%s", len(failed), strings.Join(failed, "\n"))
	}
	t.Logf("kubectl delete -k manifests/ took %s", time.Since(start).Round(time.Second))

	t.Run("a new pod in an opted-in namespace is created, without a sidecar", func(t *testing.T) {
		p := createPod(t, ns, "after-uninstall", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("app", "serve", "-addr", ":8080")}})
		for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			if strings.HasPrefix(c.Name, "podwall") {
				t.Errorf("pod created after the uninstall has container %s", c.Name)
			}
		}
	})
	t.Run("podwall's objects and its CRD are gone", func(t *testing.T) {
		for _, args := range [][]string{
			{"get", "namespace", "podwall-system"},
			{"get", "crd", "workloadpolicies.podwall.io"},
			{"get", "mutatingwebhookconfiguration", "podwall-injector"},
			{"get", "validatingadmissionpolicy", "podwall-injected-pods"},
			{"get", "priorityclass", "podwall-critical"},
		} {
			if out, err := kubectlOut(args...); err == nil || !strings.Contains(out, "NotFound") {
				t.Errorf("kubectl %s after the uninstall: %v %s", strings.Join(args, " "), err, out)
			}
		}
	})
	t.Run("a running sidecar still enforces its cached policy", func(t *testing.T) {
		since := time.Now()
		line := execConnect(t, ns, client.Name, "client", "http://"+unlisted.String()+"/")
		if !strings.Contains(line, "connect fail") || !strings.Contains(line, "connection refused") {
			t.Errorf("unlisted connection after the uninstall: %s, want refused", line)
		}
		testutil.Await(t, "a deny line for "+unlisted.String(), 30*time.Second, func() error {
			for _, l := range verdictLines(t, ns, client.Name, since.Add(-time.Second)) {
				if l.Verdict == policy.Deny && l.Dst == unlisted && l.Mode == policy.Protect {
					return nil
				}
			}
			return errors.New("no such verdict line")
		})
		if leaks := logLines(t, ns, server.Name, "server", ":9090 path="); len(leaks) > 0 {
			t.Errorf("the server accepted unlisted connections:\n%s", strings.Join(leaks, "\n"))
		}
	})
}

// createPodsThroughout dry-runs a pod creation in ns every 100 ms (a dry run goes through admission,
// webhooks included, and stores nothing) until the returned stop is called, which returns the
// refusals.
func createPodsThroughout(ns string) (stop func() []string) {
	ctx, cancel := context.WithCancel(context.Background())
	var failed []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "during-uninstall-"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{workloadContainer("app", "serve", "-addr", ":8080")}}}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for ; ctx.Err() == nil; <-tick.C {
			_, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil && ctx.Err() == nil {
				failed = append(failed, fmt.Sprintf("%s: %v", time.Now().Format(time.StampMilli), err))
			}
		}
	}()
	return func() []string {
		cancel()
		wg.Wait()
		return failed
	}
}

// reinstall installs podwall again, as requirePodwall did, for the tests that run after TestUninstall.
func reinstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := stack.Deploy(ctx, env.Cluster, env.root); err != nil {
		out, _ := kubectlOut("-n", "podwall-system", "get", "pods,events", "-o", "wide")
		t.Errorf("reinstall podwall after the uninstall: %v\n%s", err, out)
	}
}
