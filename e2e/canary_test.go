//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
)

// TestCanary: a three-replica client learns its flow to a server, then goes to Monitor with one
// canary. The canary (the first Ready pod by name) runs Protect: a connection no rule allows is
// refused there (the server gets nothing) and its deny line says canary; from another pod the same
// connection is audited and gets through. The canary's deny stops the rollout (status Stopped naming
// the pod and the flow, a Warning Event) and the canary is served Monitor again.
func TestCanary(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	// The server stays in Learn, which admits everything: a request it logs is one the client's
	// sidecar let out.
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	svc := service(t, ns, "server", 8080)
	replicated(t, ns, "client", 3, corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-url", fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP))}})
	server := podOf(t, ns, "server")
	clients := readyPods(t, ns, "client", 3)
	learn(t, ns)

	kubectl(t, "-n", ns, "patch", "workloadpolicy", "deployment-client", "--type", "merge", "-p", `{"spec":{"mode":"Monitor","canary":1}}`)
	var canary *v1alpha1.CanaryStatus
	testutil.Await(t, "a running canary", time.Minute, func() error {
		p, err := workloadPolicy(t, ns, "deployment-client")
		if err != nil {
			return err
		}
		if canary = p.Status.Canary; canary == nil || canary.State != v1alpha1.CanaryRunning {
			return fmt.Errorf("status.canary %+v", canary)
		}
		return nil
	})
	if want := []string{clients[0].Name}; !slices.Equal(canary.Pods, want) {
		t.Fatalf("canary pods %v, want %v: the first Ready pod by name", canary.Pods, want)
	}
	canaryPod, other := clients[0], clients[1]
	waitLog(t, ns, canaryPod.Name, "podwall", time.Minute, "policy applied", `"mode":"Protect"`, `"canary":true`)
	waitLog(t, ns, other.Name, "podwall", time.Minute, "policy applied", `"mode":"Monitor"`)

	unlisted := netip.AddrPortFrom(netip.MustParseAddr(server.Status.PodIP), 9090)
	since := time.Now()
	if line := execConnect(t, ns, canaryPod.Name, "client", "http://"+unlisted.String()+"/from-canary"); !strings.Contains(line, "connect fail") {
		t.Fatalf("unlisted connection from the canary: %s, want a refusal", line)
	}
	if line := execConnect(t, ns, other.Name, "client", "http://"+unlisted.String()+"/from-other"); !strings.Contains(line, "connect ok") {
		t.Fatalf("unlisted connection from a pod in Monitor: %s, want it through", line)
	}
	verdictFor(t, ns, canaryPod.Name, since, unlisted, policy.Deny, policy.Protect, true)
	verdictFor(t, ns, other.Name, since, unlisted, policy.Audit, policy.Monitor, false)
	serverPod := server.Name
	if got := logLines(t, ns, serverPod, "server", "path=/from-other"); len(got) != 1 {
		t.Errorf("the server logged %d requests from the pod in Monitor, want 1", len(got))
	}

	testutil.Await(t, "the rollout stopped", time.Minute, func() error {
		p, err := workloadPolicy(t, ns, "deployment-client")
		if err != nil {
			return err
		}
		c := p.Status.Canary
		if c == nil || c.State != v1alpha1.CanaryStopped {
			return fmt.Errorf("status.canary %+v", c)
		}
		if !strings.Contains(c.Reason, canaryPod.Name) || !strings.Contains(c.Reason, unlisted.Addr().String()+" port 9090") {
			t.Errorf("reason %q names not the canary pod %s and the flow to %s", c.Reason, canaryPod.Name, unlisted)
		}
		return nil
	})
	testutil.Await(t, "a CanaryStopped Warning Event on the policy", time.Minute, func() error {
		out, err := kubectlOut("-n", ns, "get", "events", "--field-selector",
			"involvedObject.name=deployment-client,reason=CanaryStopped,type=Warning", "-o", "jsonpath={.items[*].message}")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, canaryPod.Name) {
			return fmt.Errorf("events: %q", out)
		}
		return nil
	})

	// The canary is back in Monitor: the same connection is audited and gets through.
	testutil.Await(t, "the canary back in Monitor", time.Minute, func() error {
		if len(linesSince(t, ns, canaryPod.Name, "podwall", since, "policy applied", `"mode":"Monitor"`, `"canary":false`)) == 0 {
			return errors.New("no Monitor policy applied since")
		}
		return nil
	})
	if line := execConnect(t, ns, canaryPod.Name, "client", "http://"+unlisted.String()+"/after-stop"); !strings.Contains(line, "connect ok") {
		t.Errorf("unlisted connection from the former canary: %s, want it through", line)
	}
	if got := logLines(t, ns, serverPod, "server", "path=/from-canary"); len(got) > 0 {
		t.Errorf("the server got the connection the canary refused:\n%s", strings.Join(got, "\n"))
	}
}

// readyPods waits for n running, ready pods of the Deployment and returns them sorted by name.
func readyPods(t *testing.T, ns, app string, n int) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	testutil.Await(t, fmt.Sprintf("%d ready pods of %s/%s", n, ns, app), 2*time.Minute, func() error {
		list, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		pods = pods[:0]
		for i := range list.Items {
			if p := &list.Items[i]; p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && ready(p) {
				pods = append(pods, p)
			}
		}
		if len(pods) != n {
			return fmt.Errorf("%d ready", len(pods))
		}
		return nil
	})
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

// verdictFor waits for the pod's egress verdict line to dst since since, and checks its verdict, mode
// and canary field.
func verdictFor(t *testing.T, ns, pod string, since time.Time, dst netip.AddrPort, v policy.Verdict, mode policy.Mode, canary bool) {
	t.Helper()
	testutil.Await(t, fmt.Sprintf("a %s line of %s for %s", v, pod, dst), 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, pod, since.Add(-time.Second)) {
			if l.Direction == policy.Egress && l.Dst == dst && l.Verdict == v {
				if l.Mode != mode || l.Canary != canary {
					t.Errorf("%s line of %s: mode %s canary %v, want %s %v", v, pod, l.Mode, l.Canary, mode, canary)
				}
				return nil
			}
		}
		return errors.New("no such verdict line")
	})
}
