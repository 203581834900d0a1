package manifest

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// IstioStatusAnnotation is the annotation Istio's injector leaves on a pod it gave a proxy.
const IstioStatusAnnotation = "sidecar.istio.io/status"

// meshProxy is a mesh proxy a pod template may carry, and the in-pod ports of its admin and control
// endpoints: an app process that reaches them can read the proxy's configuration and secrets, change
// its log level, drain or stop it.
type meshProxy struct {
	rule      string
	container string
	ports     []int32
	what      string
}

var meshProxies = []meshProxy{
	// Envoy's admin (15000), the agent's debug (15004) and status (15020) ports, the health check
	// (15021) and the Prometheus endpoint (15090).
	{"m-istio-proxy", "istio-proxy", []int32{15000, 15004, 15020, 15021, 15090}, "Istio's proxy admin and control ports"},
	// The proxy's admin (4191) and tap (4190) ports.
	{"m-linkerd-proxy", "linkerd-proxy", []int32{4190, 4191}, "Linkerd's proxy admin and tap ports"},
}

// addMeshLoopback adds the loopback deny rules for the mesh proxies in t (a container of the proxy's
// name, regular or init as a native sidecar is, or for Istio its injector's status annotation),
// without the ports that an allow rule of another origin in current holds: a user's rule, or one
// learned from the pod's own connections, overrides the generated deny (the sidecar lets a deny win
// over an allow, so the deny must leave the port out).
func (r *Rules) addMeshLoopback(t *corev1.PodTemplateSpec, current []v1.LoopbackRule) {
	for _, m := range meshProxies {
		found := slices.ContainsFunc(slices.Concat(t.Spec.InitContainers, t.Spec.Containers), func(c corev1.Container) bool { return c.Name == m.container })
		source := "container " + m.container + " of the pod template"
		if !found && m.container == "istio-proxy" && t.Annotations[IstioStatusAnnotation] != "" {
			found, source = true, "annotation "+IstioStatusAnnotation+" of the pod template"
		}
		if !found {
			continue
		}
		var ports []v1.Port
		for _, p := range m.ports {
			port := v1.Port{Protocol: "TCP", Port: p}
			if !slices.ContainsFunc(current, func(l v1.LoopbackRule) bool {
				return l.Origin != policy.OriginManifest && l.Action == policy.ActionAllow && allowsPort(l.Ports, port)
			}) {
				ports = append(ports, port)
			}
		}
		if len(ports) == 0 {
			continue
		}
		r.Loopback = append(r.Loopback, v1.LoopbackRule{Name: m.rule, Origin: policy.OriginManifest, Action: policy.ActionDeny, Ports: ports})
		r.addSource("loopback", m.rule, source+" names a mesh proxy: "+m.what+" are denied to the pod's processes unless a loopback allow rule names them")
	}
}
