// Package cluster runs a real single-node Kubernetes cluster on this machine for the e2e tests and
// `make cluster`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (with the
// CNI bridge and host-local plugins), kubelet and kube-proxy, all child processes with their state in
// one folder, and CoreDNS as the cluster DNS (a Deployment behind kube-system/kube-dns, 10.96.0.10,
// the kubelet's clusterDNS), so that pods resolve Service names as on any cluster. The cluster is
// dual-stack: the node, every pod and (on request, ipFamilyPolicy) every Service has an IPv4 and an
// IPv6 address, IPv4 first; the host needs an address of each family. Stop tears it down and restores
// what the components change on the host (sysctls, iptables and ip6tables KUBE-* chains, mounts, the
// CNI bridge, cgroups, folders outside the cluster's own).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say where the binaries are and what to load before pods start.
type Options struct {
	// BinDir holds etcd, the Kubernetes binaries and coredns (hack/build-kube.sh prints it).
	BinDir string
	// WorkDir is the cluster's folder; empty means a new temporary one, removed by Stop.
	WorkDir string
	// Images are docker-format tarballs imported into containerd before the kubelet starts; they
	// must hold PauseImage and DNSImage.
	Images []string
	// Import loads one tarball into containerd at the given socket (images.Import).
	Import func(ctx context.Context, socket, tarball string) error
}

// Cluster is a running cluster.
type Cluster struct {
	// Kubeconfig is an admin kubeconfig file (kubectl --kubeconfig).
	Kubeconfig string
	// APIServerURL is the API server's address on the host's main IP.
	APIServerURL string
	// ContainerdSocket is containerd's gRPC socket (ctr --address).
	ContainerdSocket string
	// HostIP and HostIPv6 are the node's addresses, IPv4 (its primary) and IPv6.
	HostIP, HostIPv6 string
	// Config and Client reach the API server as cluster admin.
	Config *rest.Config
	Client kubernetes.Interface

	opts        Options
	dir         string
	ownDir      bool
	pki         pki
	host        hostState
	lock        *os.File // the host journal, see lockHost
	procs       []*proc
	apiPort     int
	kubeletPort int
	etcdPorts   [2]int // client, peer
	stopOnce    sync.Once
	stopErr     error
}

// Start brings the cluster up and returns once the node is Ready, the default ServiceAccount
// exists and the cluster DNS answers. On failure it has already torn down what it started.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	c = &Cluster{opts: opts, dir: opts.WorkDir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "podwall-e2e-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	}
	if c.lock, err = c.lockHost(); err != nil {
		if c.ownDir {
			os.RemoveAll(c.dir)
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	if err = c.prepare(); err != nil {
		return c, err
	}
	for _, step := range []func(context.Context) error{c.startControlPlane, c.startContainerd, c.startNode, c.startDNS} {
		if err = step(ctx); err != nil {
			return c, err
		}
	}
	return c, nil
}

// prepare picks addresses and ports and writes the certificates and configuration files.
func (c *Cluster) prepare() error {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return err
	}
	ip, err := hostIP("udp4", "203.0.113.1:9")
	if err != nil {
		return err
	}
	c.HostIP = ip.String()
	ip6, err := hostIP("udp6", "[2001:db8::1]:9")
	if err != nil {
		return fmt.Errorf("%w: the cluster is dual-stack, so the host needs an IPv6 address and route too", err)
	}
	c.HostIPv6 = ip6.String()
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	c.apiPort = ports[0]
	c.APIServerURL = "https://" + net.JoinHostPort(c.HostIP, strconv.Itoa(c.apiPort))
	c.kubeletPort = ports[1]
	c.etcdPorts = [2]int{ports[2], ports[3]}
	c.ContainerdSocket = c.path("containerd.sock")
	c.Kubeconfig = c.path("kubeconfig")
	if c.pki, err = newPKI(c.path("pki"), ip, net.ParseIP(serviceIP)); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := c.writeFiles(); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	return err
}

// Dir is the cluster's folder: configuration, certificates, state and logs/<component>.log.
func (c *Cluster) Dir() string { return c.dir }

// BinDir holds the cluster's binaries, kubectl included.
func (c *Cluster) BinDir() string { return c.opts.BinDir }

// Stop tears the cluster down and restores the host; it is safe to call on a partly started cluster,
// and more than once (an interrupt may race the normal end), and returns every problem it met.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	byName := map[string]*proc{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	// Node side first, so that nothing recreates what is being removed.
	for _, n := range []string{"kube-proxy", "kubelet"} {
		if p := byName[n]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	if p := byName["containerd"]; p != nil {
		c.killContainers()
		p.stop(10 * time.Second)
		killShimsOf(c.ContainerdSocket)
	}
	for _, n := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		if p := byName[n]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	c.procs = nil
	err := c.host.restore(c.dir)
	if c.ownDir {
		if rerr := os.RemoveAll(c.dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		// The journal stays: the next Start retries the restore.
		return errors.Join(err, c.lock.Close())
	}
	return unlockHost(c.lock)
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// hostIP is the host's address of one family (network "udp4" or "udp6") that the route to probe, a
// documentation address, leaves from: the default route's, reachable from pods (through the bridge's
// gateway) and from the host.
func hostIP(network, probe string) (net.IP, error) {
	conn, err := net.Dial(network, probe) // no packet is sent: this only asks for a route
	if err != nil {
		return nil, fmt.Errorf("find the host's %s address: %w", network, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP, nil
}

// freePorts asks the kernel for n unused TCP ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
