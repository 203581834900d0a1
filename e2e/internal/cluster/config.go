package cluster

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Addresses of the cluster's networks, dual-stack: IPv4 first (a Service's or pod's primary family,
// as on most clusters), then IPv6. They are private ranges (unique local for IPv6) unlikely to meet
// the host's own.
const (
	serviceCIDR  = "10.96.0.0/16"
	serviceCIDR6 = "fd42:96::/112"
	serviceIP    = "10.96.0.1" // the kubernetes Service, first address of serviceCIDR
	podCIDR      = "10.88.0.0/16"
	podCIDR6     = "fd42:88::/64"
	// BridgeName is the CNI bridge on the host; teardown removes it and every veth enslaved to it.
	BridgeName = "pwe2e0"
	// NodeName is the kubelet's node.
	NodeName = "podwall-e2e"
	// PauseImage is containerd's sandbox_image; the caller must import it before pods start.
	PauseImage = "podwall.test/pause:e2e"
	// DNSIP is the cluster DNS's address: the Service kube-system/kube-dns, the kubelet's clusterDNS.
	DNSIP = "10.96.0.10"
	// DNSImage is the cluster DNS's image: CoreDNS (hack/build-kube.sh coredns, BinDir/coredns) at
	// its root. The caller must import it too.
	DNSImage = "podwall.test/coredns:e2e"
)

// containerdConfig is version 2 of containerd 1.6's config. Everything lives under the cluster's
// folder. restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE, and without it runc fails with
// "can't get final child's PID from pipe" when the kubelet asks for a lower OOM score.
func (c *Cluster) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
`, c.path("containerd/root"), c.path("containerd/state"), c.ContainerdSocket, c.path("containerd/opt"),
		PauseImage, c.path("cni/net.d"))
}

// cniConfig is a bridge network with host-local addresses, one range per family, so that every pod
// gets an IPv4 and an IPv6 address (the bridge is both families' gateway). No IP masquerade: pods need
// only reach each other and the host (where the API server listens), so the bridge plugin adds no
// iptables rules.
func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "podwall-e2e", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}], [{"subnet": %q}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}], "dataDir": %q}}
]}
`, BridgeName, podCIDR, podCIDR6, c.path("cni/ipam"))
}

// kubeletConfig carries what this machine needs (cgroup v1 with the cgroupfs driver, swap present)
// and keeps the kubelet's files inside the cluster's folder. Eviction and image GC thresholds are
// lowered so that a full disk on a shared machine neither taints the node nor deletes the imported
// images, which cannot be pulled again.
func (c *Cluster) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
port: %d
readOnlyPort: 0
healthzPort: 0
address: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
tlsCertFile: %s
tlsPrivateKeyFile: %s
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, c.ContainerdSocket, c.path("pod-logs"), c.kubeletPort, c.HostIP, c.pki.CA, c.pki.ServingCert, c.pki.ServingKey, DNSIP)
}

// kubeProxyConfig: iptables mode (iptables and ip6tables: clusterCIDR names both families), with no
// masquerade between pods, so that a server sees (and podwall judges) the client pod's own address. A
// pod reaching a Service backed by a pod on the same bridge then gets the reply bridged, not routed:
// bridge-nf-call-iptables and -ip6tables (set by Start) make conntrack undo the DNAT on it. The
// conntrack limits are left as the host has them.
func (c *Cluster) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
clusterCIDR: %s,%s
healthzBindAddress: ""
metricsBindAddress: ""
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, c.Kubeconfig, NodeName, podCIDR, podCIDR6)
}

// writeKubeconfig writes the admin kubeconfig every component and kubectl use.
func (c *Cluster) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.APIServerURL, CertificateAuthority: c.pki.CA}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: c.pki.ClientCert, ClientKey: c.pki.ClientKey}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "admin"}
	cfg.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// writeFiles writes every component's configuration into the cluster's folder.
func (c *Cluster) writeFiles() error {
	files := map[string]string{
		"containerd.toml":               c.containerdConfig(),
		"cni/net.d/10-podwall.conflist": c.cniConfig(),
		"kubelet.yaml":                  c.kubeletConfig(),
		"kube-proxy.yaml":               c.kubeProxyConfig(),
	}
	for name, body := range files {
		p := c.path(name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return c.writeKubeconfig()
}
