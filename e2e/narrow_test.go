//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
)

// TestServiceNarrowing: a Service's port is open to every address while its workload learns; the
// workload that called it is learned as its caller, and once the policy is in Protect the open rule
// no longer holds the port: the caller still gets through, a workload that never called is refused
// by the server's firewall, and the server never sees its request.
func TestServiceNarrowing(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080")}})
	svc := service(t, ns, "server", 8080)
	url := fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP)
	deployment(t, ns, "caller", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("caller", "connect", "-url", url)}})
	deployment(t, ns, "idle", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("idle", "pause")}})
	server, caller, idle := podOf(t, ns, "server"), podOf(t, ns, "caller"), podOf(t, ns, "idle")

	const name = "deployment-server"
	isCaller := func(r v1alpha1.Rule) bool {
		return r.Origin == policy.OriginLearned && hasPort(r, 8080) && slices.ContainsFunc(r.Peers, func(p v1alpha1.Peer) bool {
			return p.Workload != nil && p.Workload.Kind == "Deployment" && p.Workload.Name == "caller" && p.Workload.Namespace == ""
		})
	}
	testutil.Await(t, "the server's policy learns the caller through the Service's open rule", 2*time.Minute, func() error {
		p, err := workloadPolicy(t, ns, name)
		if err != nil {
			return err
		}
		open := slices.ContainsFunc(p.Status.OpenPorts, func(o v1alpha1.OpenPort) bool {
			return o.Rule == "m-svc-server" && o.Port == 8080 && o.Reason == v1alpha1.OpenLearning
		})
		if !slices.ContainsFunc(p.Spec.Ingress, isCaller) || !open {
			return fmt.Errorf("ingress %+v, open ports %+v: want a learned rule for Deployment caller on 8080 and m-svc-server open while learning",
				p.Spec.Ingress, p.Status.OpenPorts)
		}
		return nil
	})

	setMode(t, ns, name, policy.Protect)
	testutil.Await(t, "the Service's open rule narrowed out of Learn", time.Minute, func() error {
		p, err := workloadPolicy(t, ns, name)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(p.Spec.Ingress, func(r v1alpha1.Rule) bool { return r.Name == "m-svc-server" }) || len(p.Status.OpenPorts) > 0 {
			return fmt.Errorf("ingress %+v, open ports %+v: want no m-svc-server and nothing open", p.Spec.Ingress, p.Status.OpenPorts)
		}
		return nil
	})

	// The non-caller is refused once the server's sidecar runs the narrowed policy (until then the
	// open rule lets it through: that is the policy it runs).
	var refused time.Time
	testutil.Await(t, "the server's firewall refuses the workload that never called", time.Minute, func() error {
		at := time.Now()
		if line := execConnect(t, ns, idle.Name, "idle", url+"narrowing"); !strings.Contains(line, "connect fail") {
			return fmt.Errorf("got through: %s", line)
		}
		refused = at
		return nil
	})
	// Further attempts carry a path of their own, so that the server's log tells them apart.
	for range 3 {
		if line := execConnect(t, ns, idle.Name, "idle", url+"after-refusal"); !strings.Contains(line, "connect fail") {
			t.Errorf("the non-caller got through after a refusal: %s", line)
		}
	}
	// At the receiving end: the server got nothing from the non-caller since, and kept serving the
	// caller; the server's sidecar logged the deny in Protect.
	from := func(pod *corev1.Pod) string { return "request from=" + pod.Status.PodIP + ":" }
	if got := logLines(t, ns, server.Name, "server", from(idle), "path=/after-refusal"); len(got) > 0 {
		t.Errorf("the server got the non-caller's requests after the refusal:\n%s", strings.Join(got, "\n"))
	}
	testutil.Await(t, "the server keeps serving the caller", time.Minute, func() error {
		if n := len(linesSince(t, ns, server.Name, "server", refused, from(caller))); n < 3 {
			return fmt.Errorf("%d requests from the caller since the refusal", n)
		}
		return nil
	})
	if fails := linesSince(t, ns, caller.Name, "caller", refused, "connect fail"); len(fails) > 0 {
		t.Errorf("the caller failed under the narrowed policy:\n%s", strings.Join(fails, "\n"))
	}
	testutil.Await(t, "the server's deny line for the non-caller", 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, server.Name, time.Time{}) {
			if l.Verdict == policy.Deny && l.Direction == policy.Ingress && l.Src.Addr().String() == idle.Status.PodIP &&
				l.Dst.Port() == 8080 && l.Mode == policy.Protect {
				return nil
			}
		}
		return fmt.Errorf("no ingress deny from %s", idle.Status.PodIP)
	})
}
