package manifest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// A Service's ingress rule opens its ports to every address, since the manifest does not say who
// calls it. In Learn the learner records each caller (learn.Merge does not count such an open rule as
// allowing the flow), and once the policy leaves Learn a port with observed callers is left out of the
// open rule: the learned rules that allow it carry it. A port stays open, and Rules.Open says why,
// while the policy learns, when no learned rule allows it (no caller was seen), and for a public
// Service, whose callers come from outside the cluster in numbers no list of addresses would hold.
// A user's rule is no observed caller: it adds to the open rule and never narrows it, so that a rule
// written before narrowing existed does not close a port behind its author's back.

// publicKind says why svc is public, "" when it is not: its type is LoadBalancer or NodePort, it has
// external IPs, or it carries v1.PublicAnnotation: "true".
func publicKind(svc *corev1.Service) string {
	switch {
	case svc.Spec.Type == corev1.ServiceTypeLoadBalancer || svc.Spec.Type == corev1.ServiceTypeNodePort:
		return "of type " + string(svc.Spec.Type)
	case len(svc.Spec.ExternalIPs) > 0:
		return "given external IPs"
	case svc.Annotations[v1.PublicAnnotation] == "true":
		return "annotated " + v1.PublicAnnotation + `: "true"`
	}
	return ""
}

// openReason says why a Service's port stays open to every address, "" when it is narrowed to its
// callers: the learned ingress rules that allow it.
func openReason(in Input, public bool, port v1.Port) v1.OpenReason {
	switch {
	case public:
		return v1.OpenPublic
	case cmp.Or(in.Mode, policy.Learn) == policy.Learn:
		return v1.OpenLearning
	case !slices.ContainsFunc(in.Ingress, func(r v1.Rule) bool { return r.Origin == policy.OriginLearned && allowsPort(r.Ports, port) }):
		return v1.OpenNoCallers
	}
	return ""
}

// allowsPort reports whether a rule's ports (none: every port) allow port.
func allowsPort(ports []v1.Port, port v1.Port) bool {
	return len(ports) == 0 || slices.ContainsFunc(ports, func(q v1.Port) bool { return portCovers(q, port) })
}

// serviceIngress is svc's ingress rule for the workload's ports it targets, without the ports
// narrowed to their callers (ok false when none is left), and the ports it keeps open.
func serviceIngress(in Input, svc *corev1.Service) (ru v1.Rule, source string, open []v1.OpenPort, ok bool) {
	name := "m-svc-" + svc.Name
	public := publicKind(svc)
	var ports []v1.Port
	var narrowed []string
	for _, sp := range svc.Spec.Ports {
		p := targetPort(in.Template, sp)
		if p == 0 {
			continue
		}
		port := v1.Port{Protocol: protocol(sp.Protocol), Port: p}
		reason := openReason(in, public != "", port)
		if reason == "" {
			narrowed = append(narrowed, fmt.Sprintf("%s/%d", port.Protocol, port.Port))
			continue
		}
		ports = append(ports, port)
		open = append(open, v1.OpenPort{Rule: name, Service: svc.Namespace + "/" + svc.Name, Protocol: port.Protocol, Port: port.Port, Reason: reason})
	}
	if len(ports) == 0 {
		return v1.Rule{}, "", nil, false
	}
	ru = rule(name, anyPeer, ports)
	source = "Service " + svc.Namespace + "/" + svc.Name + " selects this workload"
	switch {
	case public != "":
		source += "; it is " + public + ", so its ports stay open to every address"
	case len(narrowed) > 0:
		source += "; " + strings.Join(slices.Compact(narrowed), ", ") + " narrowed to the observed callers (the learned ingress rules that allow it), " +
			"the other ports open to every address: no caller of them was observed"
	}
	return ru, source, open, true
}

// sortOpen orders open ports by rule and port, without duplicates (two Service ports may target one
// pod port).
func sortOpen(open []v1.OpenPort) []v1.OpenPort {
	slices.SortFunc(open, func(a, b v1.OpenPort) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	return slices.Compact(open)
}

// OpenIn keeps the open ports that rules (a policy's ingress rules as written) do open: in Protect a
// port that would open again waits as a proposal, and is not open until accepted.
func OpenIn(open []v1.OpenPort, rules []v1.Rule) []v1.OpenPort {
	var out []v1.OpenPort
	for _, o := range open {
		if slices.ContainsFunc(rules, func(r v1.Rule) bool {
			return r.Name == o.Rule && r.Origin == policy.OriginManifest && allowsPort(r.Ports, v1.Port{Protocol: o.Protocol, Port: o.Port})
		}) {
			out = append(out, o)
		}
	}
	return out
}
