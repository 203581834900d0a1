package manifest

import (
	"cmp"
	"slices"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/mesh"
)

// meshMarkers says, for each mesh (internal/mesh's Proxy.Name), why the mesh's admission webhook will
// add its proxy to a template's pods ("" when it will not), from the template's and its namespace's
// injection markers: the mesh adds its proxy to the pods, not to the template.
var meshMarkers = map[string]func(in Input) string{"istio": istioInjected, "linkerd": linkerdInjected}

// meshRule names the loopback deny rule of a mesh's proxy.
func meshRule(p mesh.Proxy) string { return "m-" + p.Container }

// istioInjected follows Istio's injection markers: the pod's sidecar.istio.io/inject label (or the
// older annotation) decides, else the namespace's istio-injection=enabled or istio.io/rev label.
func istioInjected(in Input) string {
	const inject = "sidecar.istio.io/inject"
	t := in.Template
	switch v := cmp.Or(t.Labels[inject], t.Annotations[inject]); {
	case v == "true":
		return inject + `: "true" on the pod template`
	case v == "false":
	case in.NamespaceLabels["istio-injection"] == "enabled":
		return "label istio-injection=enabled of namespace " + in.Namespace
	case in.NamespaceLabels["istio.io/rev"] != "":
		return "label istio.io/rev of namespace " + in.Namespace
	}
	return ""
}

// linkerdInjected follows Linkerd's: the pod template's linkerd.io/inject annotation decides, else
// the namespace's.
func linkerdInjected(in Input) string {
	const inject = "linkerd.io/inject"
	switch v := in.Template.Annotations[inject]; {
	case v == "enabled":
		return inject + ": enabled on the pod template"
	case v == "disabled":
	case in.NamespaceAnnotations[inject] == "enabled":
		return inject + ": enabled on namespace " + in.Namespace
	}
	return ""
}

// addMeshLoopback adds the loopback deny rules for the mesh proxies of in's pods (a container of the
// proxy's name, regular or init as a native sidecar is, or the mesh's injection markers),
// without the ports that an allow rule of another origin in current holds: a user's rule, or one
// learned from the pod's own connections, overrides the generated deny (the sidecar lets a deny win
// over an allow, so the deny must leave the port out).
func (r *Rules) addMeshLoopback(in Input) {
	t := in.Template
	for _, m := range mesh.Proxies {
		source := m.Carried(&t.Spec, t.Annotations)
		if source != "" {
			source += " of the pod template"
		} else if source = meshMarkers[m.Name](in); source == "" {
			continue
		}
		var ports []v1.Port
		for _, p := range m.AdminPorts {
			port := v1.Port{Protocol: "TCP", Port: p}
			if !slices.ContainsFunc(in.Loopback, func(l v1.LoopbackRule) bool {
				return l.Origin != policy.OriginManifest && l.Action == policy.ActionAllow && allowsPort(l.Ports, port)
			}) {
				ports = append(ports, port)
			}
		}
		if len(ports) == 0 {
			continue
		}
		rule := meshRule(m)
		r.Loopback = append(r.Loopback, v1.LoopbackRule{Name: rule, Origin: policy.OriginManifest, Action: policy.ActionDeny, Ports: ports})
		r.addSource("loopback", rule, source+" means a mesh proxy in the pods: its admin and control ports are denied to the pod's processes unless a loopback allow rule names them")
	}
}
