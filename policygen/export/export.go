// Package export writes a WorkloadPolicy as a Kubernetes networking.k8s.io/v1 NetworkPolicy, for
// clusters or reviews without podwall, and lists what a NetworkPolicy cannot say. A rule whose peers
// cannot be expressed at all is left out rather than exported with no peers, which a NetworkPolicy
// reads as "everyone". DNS names (fqdn peers) are among them: a NetworkPolicy has no names, and the
// addresses a name has now are not the ones it will have, so such a peer is left out and noted, never
// replaced by addresses. A Service without a selector is the endpoint addresses its peer pins, which
// are the policy's own.
package export

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// Input is a policy and the selectors its workload and peers are found by.
type Input struct {
	Policy *v1.WorkloadPolicy
	// PodSelector selects the policy's own workload's pods.
	PodSelector *metav1.LabelSelector
	// Workloads holds peer workloads' pod selectors by "namespace/Kind/name".
	Workloads map[string]*metav1.LabelSelector
	// Services holds peer Services by "namespace/name".
	Services map[string]*corev1.Service
}

// Name is the NetworkPolicy's name for the WorkloadPolicy named name.
func Name(name string) string { return "podwall-" + name }

// NetworkPolicy translates in; the strings say what was left out or changes meaning.
func NetworkPolicy(in Input) (*networkingv1.NetworkPolicy, []string) {
	wp := in.Policy
	x := &exporter{in: in}
	np := &networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: wp.Namespace, Name: Name(wp.Name),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "podwall"}},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
	if in.PodSelector != nil {
		np.Spec.PodSelector = *in.PodSelector
	} else {
		x.note("workload %s/%s not found: the exported policy selects no pods until podSelector is filled in", wp.Spec.Workload.Kind, wp.Spec.Workload.Name)
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"podwall.io/unresolved-workload": "true"}}
	}
	if m := wp.Spec.Mode; m != policy.Protect && m != "" {
		x.note("mode %s: a NetworkPolicy always enforces; these are the rules Protect would enforce", m)
	}
	if wp.Spec.RestrictDNS {
		x.note("restrictDNS: a NetworkPolicy cannot judge DNS queries by the name they ask for; the pod may resolve any name")
	}
	for _, r := range wp.Spec.Ingress {
		if ports, ok := x.ports("ingress", r); ok {
			if peers := x.peers("ingress", r); len(peers) > 0 {
				np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
			}
		}
	}
	for _, r := range wp.Spec.Egress {
		if ports, ok := x.ports("egress", r); ok {
			if peers := x.peers("egress", r); len(peers) > 0 {
				np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
			}
		}
	}
	for _, l := range wp.Spec.Loopback {
		x.note("loopback rule %s (%s): NetworkPolicy does not see traffic inside a pod", l.Name, l.Action)
	}
	return np, x.notes
}

type exporter struct {
	in    Input
	notes []string
}

func (x *exporter) note(format string, args ...any) {
	x.notes = append(x.notes, fmt.Sprintf(format, args...))
}

func (x *exporter) peers(dir string, r v1.Rule) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, p := range r.Peers {
		if p.Service != nil && p.Service.Endpoints != nil {
			pinned := pinnedBlocks(p.Service.Endpoints)
			if len(pinned) == 0 {
				x.note("%s rule %s: Service %s pins no endpoint address, so the exported policy allows nothing for it", dir, r.Name, p.Service.Name)
			}
			out = append(out, pinned...)
			continue
		}
		np, why := x.peer(p)
		if why != "" {
			x.note("%s rule %s: %s", dir, r.Name, why)
			continue
		}
		out = append(out, np)
	}
	if len(out) == 0 && len(r.Peers) > 0 {
		x.note("%s rule %s left out: none of its peers can be expressed", dir, r.Name)
	}
	if everyone(r.Peers) {
		// Every address of both families takes in every pod, but network plugins differ on whether an
		// ipBlock matches pod addresses (the API meant ipBlocks for addresses outside the cluster): so
		// every pod of every namespace is selected as well.
		out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}})
	}
	return out
}

// everyone reports whether peers hold both 0.0.0.0/0 and ::/0.
func everyone(peers []v1.Peer) bool {
	var v4, v6 bool
	for _, p := range peers {
		if pfx, err := netip.ParsePrefix(p.CIDR); err == nil && pfx.Bits() == 0 {
			v4 = v4 || pfx.Addr().Is4()
			v6 = v6 || pfx.Addr().Is6()
		}
	}
	return v4 && v6
}

// peer translates one peer, or says why it cannot.
func (x *exporter) peer(p v1.Peer) (networkingv1.NetworkPolicyPeer, string) {
	ns := x.in.Policy.Namespace
	switch {
	case p.CIDR != "":
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: p.CIDR}}, ""
	case p.Workload != nil:
		wns := or(p.Workload.Namespace, ns)
		key := wns + "/" + p.Workload.Kind + "/" + p.Workload.Name
		sel := x.in.Workloads[key]
		if sel == nil {
			return networkingv1.NetworkPolicyPeer{}, "workload " + key + " not found"
		}
		return inNamespace(ns, wns, sel), ""
	case p.Service != nil:
		sns := or(p.Service.Namespace, ns)
		svc := x.in.Services[sns+"/"+p.Service.Name]
		if svc == nil || len(svc.Spec.Selector) == 0 {
			return networkingv1.NetworkPolicyPeer{}, "Service " + sns + "/" + p.Service.Name + " has no pod selector (missing, ExternalName or manual endpoints)"
		}
		// NetworkPolicy sees traffic after the Service's translation: its pods, on their target ports.
		return inNamespace(ns, sns, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}), ""
	case p.Selector != nil:
		out := networkingv1.NetworkPolicyPeer{}
		if p.Selector.PodSelector != nil {
			out.PodSelector = p.Selector.PodSelector.AsMeta()
		}
		if p.Selector.NamespaceSelector != nil {
			out.NamespaceSelector = p.Selector.NamespaceSelector.AsMeta()
		}
		return out, ""
	case p.Nodes:
		return networkingv1.NetworkPolicyPeer{}, "nodes cannot be selected (most network plugins let kubelet probes through anyway)"
	case p.FQDN != "":
		// Exporting the addresses the name has now would allow whoever holds them later.
		return networkingv1.NetworkPolicyPeer{}, "fqdn " + p.FQDN + ": a NetworkPolicy cannot name DNS names, so the exported policy denies what this peer allows"
	}
	return networkingv1.NetworkPolicyPeer{}, "empty peer"
}

// pinnedBlocks are the endpoint addresses a Service peer pins (a Service without a selector: podwall
// allows them while its EndpointSlices list them), each a one-address ipBlock. A NetworkPolicy sees
// the connection after the Service's translation, at the endpoint's address, and the pin, unlike a
// DNS name's addresses, is the policy's own: no address outside it is ever allowed.
func pinnedBlocks(pin *v1.ServiceEndpoints) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, a := range pin.Addresses {
		if ip, err := netip.ParseAddr(string(a)); err == nil {
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}})
		}
	}
	return out
}

// inNamespace selects pods by sel in namespace ns, seen from a policy in namespace from.
func inNamespace(from, ns string, sel *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	out := networkingv1.NetworkPolicyPeer{PodSelector: sel.DeepCopy()}
	if ns != from {
		out.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	}
	return out
}

// ports translates a rule's ports, false when the rule must be left out. A NetworkPolicy names TCP,
// UDP and SCTP ports only: an ICMP or ICMPv6 port (with its message types) is dropped and noted, and a
// rule left with none of the ports it named is left out, because a rule without ports would allow
// every protocol and port.
func (x *exporter) ports(dir string, r v1.Rule) ([]networkingv1.NetworkPolicyPort, bool) {
	var out []networkingv1.NetworkPolicyPort
	for _, p := range r.Ports {
		if p.Protocol.IsICMP() {
			x.note("%s rule %s: %s%s cannot be named in a NetworkPolicy, so the exported policy denies it", dir, r.Name, p.Protocol, icmpTypes(p.Types))
			continue
		}
		proto := corev1.Protocol(or(string(p.Protocol), "TCP"))
		np := networkingv1.NetworkPolicyPort{Protocol: &proto}
		if p.Port != 0 {
			port := intstr.FromInt32(p.Port)
			np.Port = &port
		}
		if p.EndPort != 0 {
			end := p.EndPort
			np.EndPort = &end
		}
		out = append(out, np)
	}
	if len(out) == 0 && len(r.Ports) > 0 {
		x.note("%s rule %s left out: none of its ports can be expressed", dir, r.Name)
		return nil, false
	}
	return out, true
}

// icmpTypes says which message types an ICMP port names, "" for every type.
func icmpTypes(types []int32) string {
	if len(types) == 0 {
		return ""
	}
	return fmt.Sprintf(" (types %v)", types)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
