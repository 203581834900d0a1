//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/internal/testutil"
)

// TestClusterServesTraffic proves the cluster itself: a pod from a locally built image runs, serves
// the host, and another pod reaches it through a Service (kube-proxy) with its own address intact
// (no masquerade, which podwall's ingress judgement depends on), over IPv4 and over IPv6 alike: the
// cluster is dual-stack.
func TestClusterServesTraffic(t *testing.T) {
	ns := namespace(t, nil)
	server := createPod(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve")}})
	svc := service(t, ns, "server", 8080)
	server6 := ipv6Of(t, podIPs(server))
	if len(server.Status.PodIPs) != 2 || len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("pod IPs %v, Service cluster IPs %v: want one of each family", server.Status.PodIPs, svc.Spec.ClusterIPs)
	}

	for _, ip := range []string{server.Status.PodIP, server6.String()} {
		url := "http://" + net.JoinHostPort(ip, "8080") + "/"
		testutil.Await(t, "host reaches the server pod at "+url, 30*time.Second, func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		})
	}

	client := createPod(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-url", fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP)),
	}})
	waitLog(t, ns, "client", "client", time.Minute, "connect ok", "status=200", `body="ok server"`)
	waitLog(t, ns, "server", "server", time.Minute, "request from="+client.Status.PodIP+":")

	svc6 := netip.AddrPortFrom(ipv6Of(t, svc.Spec.ClusterIPs), 8080)
	if line := execConnect(t, ns, "client", "client", "http://"+svc6.String()+"/"); !strings.Contains(line, "connect ok") {
		t.Fatalf("client to the Service's IPv6 address %s: %s", svc6, line)
	}
	waitLog(t, ns, "server", "server", time.Minute, "request from=["+ipv6Of(t, podIPs(client)).String()+"]:")
}
