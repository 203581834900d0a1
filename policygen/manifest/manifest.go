// Package manifest derives a workload's day-0 rules, those of origin manifest, from its manifest:
// ingress on the ports Services selecting it expose and on probe ports from the nodes, egress to cluster
// DNS and to the Services its environment or the podwall.io/egress annotation names, and loopback
// denies of a mesh proxy's admin and control ports. A Service's ports are open to every address
// while the policy learns who calls them, and narrowed to the observed callers after (open.go).
// Everything here is pure, so that the rules a manifest yields can be table-tested without a cluster; the generator
// controller reads the cluster and writes them into the workload's WorkloadPolicy.
//
// Each rule comes with its source (Rules.Sources: "Service demo/web selects this workload", "env
// DB_HOST of container app names Service demo/db"), because most of what it is derived from is written
// by the namespace's users, not by whoever owns the policy. Gate is how a policy in Protect takes them:
// a rule that only tightens applies, one that adds or widens becomes a proposal (v1alpha1.Proposal,
// named by its content's hash) until accepted.
//
// A Service without a selector forwards wherever its EndpointSlices point, and podwall judges egress
// in the pod, before the node translates the cluster IP; so its egress peer pins the endpoint
// addresses the slices list at derivation (v1alpha1.ServiceEndpoints), and a new address is a change
// of the rule like any other. (Cilium's toServices follows such a Service's endpoints as CIDRs, with
// no gate; kube-network-policies has no Service peers and judges on the node after the translation.)
package manifest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// EgressAnnotation on a workload or its pod template names further Services the workload calls, as a
// comma- or space-separated list of "name" (same namespace) or "namespace/name".
const EgressAnnotation = "podwall.io/egress"

// Input is what a workload's manifest rules are derived from.
type Input struct {
	Namespace string
	Template  *corev1.PodTemplateSpec
	// Annotations are the workload object's own annotations (the template's are read too).
	Annotations map[string]string
	// Services are the cluster's Services (any namespace).
	Services []corev1.Service
	// EndpointSlices are the EndpointSlices of the Services without a selector (others are ignored):
	// they pin such a Service's egress peer to their addresses.
	EndpointSlices []discoveryv1.EndpointSlice
	// DNS is the cluster DNS Service; no DNS rule is generated when its name is empty.
	DNS v1.ServicePeer
	// ClusterDomain is the cluster's DNS domain, "cluster.local" when empty.
	ClusterDomain string
	// Mode is the policy's ("" is Learn): out of Learn, a Service's port with observed callers is
	// narrowed to them.
	Mode policy.Mode
	// Ingress and Loopback are the policy's rules now. Its learned ingress rules are the observed
	// callers of a Service's ports; its loopback allow rules of other origins than manifest leave their
	// ports out of a mesh proxy's generated loopback deny.
	Ingress  []v1.Rule
	Loopback []v1.LoopbackRule
	// NamespaceLabels and NamespaceAnnotations are the namespace's: they may ask a mesh's admission
	// webhook to add its proxy to the pods.
	NamespaceLabels      map[string]string
	NamespaceAnnotations map[string]string
}

// Rules are the generated rules, all of origin manifest, sorted by name.
type Rules struct {
	Ingress  []v1.Rule
	Egress   []v1.Rule
	Loopback []v1.LoopbackRule
	// Sources say what in the cluster caused each rule, keyed by SourceKey, e.g. "Service shop/web
	// selects this workload" or "env API_URL of container app names Service shop/api".
	Sources map[string]string
	// Open are the Service ports the ingress rules open to every address, and why.
	Open []v1.OpenPort
}

// SourceKey is a rule's key in Rules.Sources: "ingress/<name>", "egress/<name>" or "loopback/<name>".
func SourceKey(direction, name string) string { return direction + "/" + name }

// addSource records why a rule exists; a rule several things cause lists each once.
func (r *Rules) addSource(direction, name, source string) {
	if r.Sources == nil {
		r.Sources = map[string]string{}
	}
	k := SourceKey(direction, name)
	switch old := r.Sources[k]; {
	case old == "":
		r.Sources[k] = source
	case !slices.Contains(strings.Split(old, "; "), source):
		r.Sources[k] = old + "; " + source
	}
}

// anyPeer is every address: a Service's clients are not known from the manifest.
var anyPeer = []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}

// Derive returns the manifest rules for in.
func Derive(in Input) Rules {
	var r Rules
	podLabels := labels.Set(in.Template.Labels)
	for _, svc := range in.Services {
		if svc.Namespace != in.Namespace || len(svc.Spec.Selector) == 0 {
			continue
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		if ru, source, open, ok := serviceIngress(in, &svc); ok {
			r.Ingress = append(r.Ingress, ru)
			r.addSource("ingress", ru.Name, source)
			r.Open = append(r.Open, open...)
		}
	}
	r.Open = sortOpen(r.Open)
	if ports := probePorts(in.Template); len(ports) > 0 {
		r.Ingress = append(r.Ingress, rule("m-probes", []v1.Peer{{Nodes: true}}, ports))
		r.addSource("ingress", "m-probes", "the pod template's probes")
	}
	if in.DNS.Name != "" {
		r.Egress = append(r.Egress, rule("m-dns", []v1.Peer{{Service: &v1.ServicePeer{Namespace: in.DNS.Namespace, Name: in.DNS.Name}}},
			[]v1.Port{{Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 53}}))
		r.addSource("egress", "m-dns", "cluster DNS "+in.DNS.Namespace+"/"+in.DNS.Name+", every workload's")
	}
	for _, ref := range referencedServices(in) {
		svc := ref.svc
		name := "m-svc-" + svc.Name
		if svc.Namespace != in.Namespace {
			name += "." + svc.Namespace
		}
		peer := v1.ServicePeer{Namespace: svc.Namespace, Name: svc.Name}
		source := ref.source
		if len(svc.Spec.Selector) == 0 {
			peer.Endpoints = endpointsOf(svc, in.EndpointSlices)
			source += fmt.Sprintf(" (no selector: its EndpointSlices point at %s)", addressList(peer.Endpoints.Addresses))
		}
		ru := rule(name, []v1.Peer{{Service: &peer}}, servicePorts(svc, ref.port))
		r.Egress = append(r.Egress, ru)
		r.addSource("egress", ru.Name, source)
	}
	r.addMeshLoopback(in)
	byName := func(a, b v1.Rule) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(r.Ingress, byName)
	slices.SortFunc(r.Egress, byName)
	r.Egress = mergeSameName(r.Egress)
	return r
}

// mergeSameName joins adjacent rules of one name (a Service referenced twice, with different ports).
func mergeSameName(rules []v1.Rule) []v1.Rule {
	var out []v1.Rule
	for _, r := range rules {
		if n := len(out); n > 0 && out[n-1].Name == r.Name {
			out[n-1].Ports = NormalizePorts(append(out[n-1].Ports, r.Ports...))
			continue
		}
		out = append(out, r)
	}
	return out
}

func rule(name string, peers []v1.Peer, ports []v1.Port) v1.Rule {
	if len(name) > 100 {
		name = strings.TrimRight(name[:100], "-.")
	}
	return v1.Rule{Name: name, Origin: policy.OriginManifest, Peers: peers, Ports: NormalizePorts(ports)}
}

func protocol(p corev1.Protocol) policy.Protocol {
	if p == "" {
		return "TCP"
	}
	return policy.Protocol(p)
}

// targetPort resolves a Service port's target to a number on the pod, 0 if a named target is not found.
func targetPort(t *corev1.PodTemplateSpec, sp corev1.ServicePort) int32 {
	switch {
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		return namedPort(t, sp.TargetPort.StrVal)
	case sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal
	}
	return sp.Port
}

func namedPort(t *corev1.PodTemplateSpec, name string) int32 {
	for _, c := range slices.Concat(t.Spec.InitContainers, t.Spec.Containers) {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// probePorts are the TCP ports the kubelet probes, from the node.
func probePorts(t *corev1.PodTemplateSpec) []v1.Port {
	var ports []v1.Port
	add := func(p intstr.IntOrString) {
		n := p.IntVal
		if p.Type == intstr.String {
			n = namedPort(t, p.StrVal)
		}
		if n > 0 {
			ports = append(ports, v1.Port{Protocol: "TCP", Port: n})
		}
	}
	for _, c := range slices.Concat(t.Spec.InitContainers, t.Spec.Containers) {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			switch {
			case pr == nil:
			case pr.HTTPGet != nil:
				add(pr.HTTPGet.Port)
			case pr.TCPSocket != nil:
				add(pr.TCPSocket.Port)
			case pr.GRPC != nil:
				add(intstr.FromInt32(pr.GRPC.Port))
			}
		}
	}
	return ports
}

// servicePorts are the ports a client of svc connects to: the Service ports (cluster IP) and their
// numeric target ports (pod IPs, when the client's node translates at the socket). Only the named
// service port when port is not 0.
func servicePorts(svc *corev1.Service, port int32) []v1.Port {
	var ports []v1.Port
	for _, sp := range svc.Spec.Ports {
		if port != 0 && sp.Port != port {
			continue
		}
		ports = append(ports, v1.Port{Protocol: protocol(sp.Protocol), Port: sp.Port})
		if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
			ports = append(ports, v1.Port{Protocol: protocol(sp.Protocol), Port: sp.TargetPort.IntVal})
		}
	}
	return ports
}

// NormalizePorts sorts ports, drops duplicates and ports inside a whole-protocol entry.
func NormalizePorts(ports []v1.Port) []v1.Port {
	out := slices.Clone(ports)
	for i := range out {
		if out[i].Protocol == "" {
			out[i].Protocol = "TCP"
		}
	}
	compare := func(a, b v1.Port) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port), cmp.Compare(a.EndPort, b.EndPort),
			slices.Compare(a.Types, b.Types))
	}
	slices.SortFunc(out, compare)
	out = slices.CompactFunc(out, func(a, b v1.Port) bool { return compare(a, b) == 0 })
	// An entry without port and types is the whole protocol (every ICMP type, for ICMP).
	whole := func(p v1.Port) bool { return p.Port == 0 && len(p.Types) == 0 }
	all := map[policy.Protocol]bool{}
	for _, p := range out {
		if whole(p) {
			all[p.Protocol] = true
		}
	}
	return slices.DeleteFunc(out, func(p v1.Port) bool { return !whole(p) && all[p.Protocol] })
}
