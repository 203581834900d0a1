//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/internal/testutil"
)

// TestUnlabelledNamespaceUntouched: with podwall deployed, a pod in a namespace without the opt-in
// label gets no sidecar and its traffic flows as before.
func TestUnlabelledNamespaceUntouched(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, nil)
	server := createPod(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve")}})
	client := createPod(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-url", fmt.Sprintf("http://%s:8080/", server.Status.PodIP)),
	}})
	for _, p := range []*corev1.Pod{server, client} {
		if len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers) != 1 {
			t.Errorf("pod %s was changed: init %d, containers %d", p.Name, len(p.Spec.InitContainers), len(p.Spec.Containers))
		}
		for k := range p.Annotations {
			if len(k) > len("podwall.io/") && k[:len("podwall.io/")] == "podwall.io/" {
				t.Errorf("pod %s carries annotation %s", p.Name, k)
			}
		}
	}
	waitLog(t, ns, "client", "client", time.Minute, "connect ok")
}

// TestMeshProxy: in a pod whose outgoing TCP an init step redirects to a local proxy (as istio-init
// does), the sidecar judges and logs the app's connection against its real remote, not the proxy.
func TestMeshProxy(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve")}})
	svc := service(t, ns, "server", 8080)
	root, proxyUID := int64(0), int64(1337)
	meshInit := workloadContainer("mesh-init", "redirect", "-to-port", "15001", "-proxy-uid", "1337")
	meshInit.SecurityContext = &corev1.SecurityContext{RunAsUser: &root,
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
	proxy := workloadContainer("proxy", "proxy", "-addr", ":15001")
	proxy.SecurityContext = &corev1.SecurityContext{RunAsUser: &proxyUID}
	remote := fmt.Sprintf("%s:8080", svc.Spec.ClusterIP)
	app := workloadContainer("app", "connect", "-url", "http://"+remote+"/")
	deployment(t, ns, "meshed", corev1.PodSpec{InitContainers: []corev1.Container{meshInit}, Containers: []corev1.Container{proxy, app}})
	pod := podOf(t, ns, "meshed")

	waitLog(t, ns, pod.Name, "app", time.Minute, "connect ok")
	// The proxy sees each of the app's connections with the app's own source address and port; a
	// verdict line with one of those sources is the app's connection (the proxy's onward one has
	// another port). Allows are logged once per peer and port, so not every relay has a line.
	testutil.Await(t, "a verdict line for one of the app's redirected connections, against "+remote, time.Minute, func() error {
		sources := map[string]bool{}
		for _, relay := range logLines(t, ns, pod.Name, "proxy", "proxy relay", "to="+remote) {
			if m := relayFrom.FindStringSubmatch(relay); m != nil {
				sources[m[1]] = true
			}
		}
		for _, l := range verdictLines(t, ns, pod.Name, time.Time{}) {
			if l.Dst.String() == remote && sources[l.Src.String()] {
				t.Logf("verdict line for the app's redirected connection: %+v", l)
				return nil
			}
		}
		return fmt.Errorf("none among %d relayed connections", len(sources))
	})
}

var relayFrom = regexp.MustCompile(`from=(\S+)`)
