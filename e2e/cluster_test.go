//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/internal/testutil"
)

// TestClusterServesTraffic proves the cluster itself: a pod from a locally built image runs, serves
// the host, and another pod reaches it through a Service (kube-proxy) with its own address intact
// (no masquerade, which podwall's ingress judgement depends on).
func TestClusterServesTraffic(t *testing.T) {
	ns := namespace(t, nil)
	server := createPod(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve")}})
	svc := service(t, ns, "server", 8080)

	testutil.Await(t, "host reaches the server pod", 30*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://%s:8080/", server.Status.PodIP))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})

	client := createPod(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-url", fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP)),
	}})
	waitLog(t, ns, "client", "client", time.Minute, "connect ok", "status=200", `body="ok server"`)
	waitLog(t, ns, "server", "server", time.Minute, "request from="+client.Status.PodIP+":")
}
