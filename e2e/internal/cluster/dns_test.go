package cluster

import (
	"net/netip"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestDNSManifest: the cluster DNS's manifest, filled in, runs DNSImage behind a kube-system/kube-dns
// Service at the kubelet's clusterDNS address, inside the Service range.
func TestDNSManifest(t *testing.T) {
	m := dnsManifest()
	if strings.Contains(m, "${") {
		t.Fatalf("a placeholder is left in the manifest:\n%s", m)
	}
	var svc corev1.Service
	var dep appsv1.Deployment
	for _, doc := range strings.Split(m, "\n---\n") {
		var obj struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		into := map[string]any{"Service": &svc, "Deployment": &dep}[obj.Kind]
		if into == nil {
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("%s: %v", obj.Kind, err)
		}
	}
	if svc.Namespace != "kube-system" || svc.Name != "kube-dns" || svc.Spec.ClusterIP != DNSIP {
		t.Errorf("Service %s/%s at %q, want kube-system/kube-dns at %s", svc.Namespace, svc.Name, svc.Spec.ClusterIP, DNSIP)
	}
	if !netip.MustParsePrefix(serviceCIDR).Contains(netip.MustParseAddr(DNSIP)) {
		t.Errorf("%s is outside the Service range %s", DNSIP, serviceCIDR)
	}
	if c := dep.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Image != DNSImage {
		t.Errorf("the Deployment's containers %+v, want one running %s", c, DNSImage)
	}
}
