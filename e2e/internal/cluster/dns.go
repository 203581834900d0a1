package cluster

import (
	"bytes"
	"context"
	_ "embed" // the cluster DNS's manifest
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"time"
)

//go:embed dns.yaml
var dnsYAML string

// dnsManifest is dns.yaml with the Service's address and CoreDNS's image filled in.
func dnsManifest() string {
	return strings.NewReplacer("${DNS_IP}", DNSIP, "${DNS_IMAGE}", DNSImage).Replace(dnsYAML)
}

// startDNS deploys CoreDNS as the cluster DNS (dns.yaml) and waits until it answers through its
// Service: the kubernetes Service's name, looked up from the host at the kubelet's clusterDNS
// address, resolves to its cluster IP.
func (c *Cluster) startDNS(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, c.bin("kubectl"), "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(dnsManifest())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apply the cluster DNS: %w: %s", err, bytes.TrimSpace(out))
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, net.JoinHostPort(DNSIP, "53"))
	}}
	return c.waitFor(ctx, "cluster DNS", 3*time.Minute, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local.")
		if err != nil {
			return err
		}
		if !slices.Contains(addrs, serviceIP) {
			return fmt.Errorf("kubernetes.default.svc.cluster.local is %v, want %s", addrs, serviceIP)
		}
		return nil
	})
}
