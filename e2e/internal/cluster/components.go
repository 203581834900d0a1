package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

// startControlPlane runs etcd, the API server (with service-account token signing, so projected
// tokens and TokenReview work, and a Service range per family), the controller manager (which gives
// the node one pod range per family, the very ranges the CNI network hands out) and the scheduler.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(c.etcdPorts[0])
	if err := c.start("etcd", c.bin("etcd"), "--data-dir", c.path("etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(c.etcdPorts[1]),
		"--unsafe-no-fsync"); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "etcd", time.Minute, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return err
	}
	p := c.pki
	if err := c.start("kube-apiserver", c.bin("kube-apiserver"), "--etcd-servers", etcdURL,
		"--bind-address", "0.0.0.0", "--advertise-address", c.HostIP, "--secure-port", strconv.Itoa(c.apiPort),
		"--tls-cert-file", p.ServingCert, "--tls-private-key-file", p.ServingKey, "--client-ca-file", p.CA,
		"--service-account-key-file", p.SAPub, "--service-account-signing-key-file", p.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", serviceCIDR+","+serviceCIDR6, "--authorization-mode", "RBAC", "--allow-privileged",
		"--kubelet-client-certificate", p.ClientCert, "--kubelet-client-key", p.ClientKey,
		"--kubelet-preferred-address-types", "InternalIP", "--cert-dir", c.path("pki", "apiserver")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver", 2*time.Minute, func(ctx context.Context) error {
		return c.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}); err != nil {
		return err
	}
	if err := c.start("kube-controller-manager", c.bin("kube-controller-manager"), "--kubeconfig", c.Kubeconfig,
		"--service-account-private-key-file", p.SAKey, "--root-ca-file", p.CA, "--leader-elect=false",
		"--secure-port=0", "--allocate-node-cidrs", "--cluster-cidr", podCIDR+","+podCIDR6,
		"--node-cidr-mask-size-ipv4", prefixLen(podCIDR), "--node-cidr-mask-size-ipv6", prefixLen(podCIDR6)); err != nil {
		return err
	}
	return c.start("kube-scheduler", c.bin("kube-scheduler"), "--kubeconfig", c.Kubeconfig,
		"--authentication-kubeconfig", c.Kubeconfig, "--authorization-kubeconfig", c.Kubeconfig,
		"--leader-elect=false", "--secure-port=0")
}

// startContainerd runs containerd and imports the images the pods will use.
func (c *Cluster) startContainerd(ctx context.Context) error {
	if err := c.start("containerd", "containerd", "--config", c.path("containerd.toml")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", time.Minute, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", c.ContainerdSocket, "version").Run()
	}); err != nil {
		return err
	}
	for _, img := range c.opts.Images {
		if err := c.opts.Import(ctx, c.ContainerdSocket, img); err != nil {
			return err
		}
	}
	return nil
}

// startNode runs the kubelet and kube-proxy and waits until the node is Ready and pods can be given
// ServiceAccounts.
func (c *Cluster) startNode(ctx context.Context) error {
	// Restored by Stop like the other sysctls; see kubeProxyConfig.
	for _, s := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		if err := os.WriteFile("/proc/sys/net/bridge/"+s, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("%s (br_netfilter): %w", s, err)
		}
	}
	if err := c.start("kubelet", c.bin("kubelet"), "--config", c.path("kubelet.yaml"),
		"--kubeconfig", c.Kubeconfig, "--root-dir", c.path("kubelet"), "--hostname-override", NodeName,
		"--node-ip", c.HostIP+","+c.HostIPv6); err != nil {
		return err
	}
	if err := c.start("kube-proxy", c.bin("kube-proxy"), "--config", c.path("kube-proxy.yaml")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "node Ready", 3*time.Minute, c.nodeReady); err != nil {
		return err
	}
	return c.waitFor(ctx, "default ServiceAccount", time.Minute, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) nodeReady(ctx context.Context) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node not ready: %s", cond.Message)
		}
	}
	return errors.New("node has no Ready condition yet")
}

// prefixLen is the prefix length of a CIDR ("10.88.0.0/16" -> "16"): the node's pod range is the
// whole cluster range, since the cluster has one node.
func prefixLen(cidr string) string {
	_, bits, _ := strings.Cut(cidr, "/")
	return bits
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
