package manifest

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// IstioStatusAnnotation is the annotation Istio's injector leaves on a pod it gave a proxy.
const IstioStatusAnnotation = "sidecar.istio.io/status"

// meshProxy is a mesh proxy a pod may carry, and the in-pod ports of its admin and control endpoints:
// an app process that reaches them can read the proxy's configuration and secrets, change its log
// level, drain or stop it.
type meshProxy struct {
	rule      string
	container string
	ports     []int32
	what      string
	// injected says why the mesh's admission webhook will add the proxy to the template's pods ("" when
	// it will not), from the template's and its namespace's injection markers.
	injected func(in Input) string
}

var meshProxies = []meshProxy{
	// Envoy's admin (15000), the agent's debug (15004) and status (15020) ports, the health check
	// (15021) and the Prometheus endpoint (15090).
	{"m-istio-proxy", "istio-proxy", []int32{15000, 15004, 15020, 15021, 15090}, "Istio's proxy admin and control ports", istioInjected},
	// The proxy's admin (4191) and tap (4190) ports.
	{"m-linkerd-proxy", "linkerd-proxy", []int32{4190, 4191}, "Linkerd's proxy admin and tap ports", linkerdInjected},
}

// istioInjected follows Istio's injection markers: the pod's sidecar.istio.io/inject label (or the
// older annotation) decides, else the namespace's istio-injection=enabled or istio.io/rev label.
func istioInjected(in Input) string {
	const inject = "sidecar.istio.io/inject"
	t := in.Template
	switch v := cmp.Or(t.Labels[inject], t.Annotations[inject]); {
	case t.Annotations[IstioStatusAnnotation] != "":
		return "annotation " + IstioStatusAnnotation + " of the pod template"
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
	for _, m := range meshProxies {
		source := "container " + m.container + " of the pod template"
		if !slices.ContainsFunc(slices.Concat(t.Spec.InitContainers, t.Spec.Containers), func(c corev1.Container) bool { return c.Name == m.container }) {
			if source = m.injected(in); source == "" {
				continue
			}
		}
		var ports []v1.Port
		for _, p := range m.ports {
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
		r.Loopback = append(r.Loopback, v1.LoopbackRule{Name: m.rule, Origin: policy.OriginManifest, Action: policy.ActionDeny, Ports: ports})
		r.addSource("loopback", m.rule, source+" means a mesh proxy in the pods: "+m.what+" are denied to the pod's processes unless a loopback allow rule names them")
	}
}
