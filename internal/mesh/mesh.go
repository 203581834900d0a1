// Package mesh knows the service-mesh proxies podwall works beside: how a pod shows that it carries
// one, the ports the proxy redirects the pod's traffic to, and the ports of its own admin and control
// endpoints. The injector uses it to tell the sidecar where a proxy redirects (so that connections
// are judged by their real remote), policygen to deny the proxy's admin ports to the app.
package mesh

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Proxy is one mesh's proxy.
type Proxy struct {
	// Name is the mesh's: "istio" or "linkerd".
	Name string
	// Container is the proxy container's name, as the mesh's injector adds it (a regular container,
	// or an init container with restartPolicy Always: a native sidecar).
	Container string
	// StatusAnnotation is the annotation the mesh's injector leaves on a pod it gave a proxy; empty
	// for a mesh that leaves none podwall reads.
	StatusAnnotation string
	// Outbound and Inbound are the in-pod ports the proxy's REDIRECT rules send the pod's outbound and
	// inbound connections to.
	Outbound, Inbound int
	// AdminPorts are the in-pod ports of the proxy's admin and control endpoints: an app process that
	// reaches them can read the proxy's configuration and secrets, change its log level, drain or stop
	// it.
	AdminPorts []int32
}

// Proxies are the meshes podwall knows.
var Proxies = []Proxy{
	// Envoy's admin (15000), the agent's debug (15004) and status (15020) ports, the health check
	// (15021) and the Prometheus endpoint (15090).
	{Name: "istio", Container: "istio-proxy", StatusAnnotation: "sidecar.istio.io/status",
		Outbound: 15001, Inbound: 15006, AdminPorts: []int32{15000, 15004, 15020, 15021, 15090}},
	// The proxy's tap (4190) and admin (4191) ports.
	{Name: "linkerd", Container: "linkerd-proxy", Outbound: 4140, Inbound: 4143, AdminPorts: []int32{4190, 4191}},
}

// In returns the proxy a pod (or pod template) with this spec and these annotations carries (see
// Carried), the first of Proxies if it carries several. The injector's webhook is re-invoked after
// other webhooks change the pod, so a proxy added after podwall's injection is still seen.
func In(spec *corev1.PodSpec, annotations map[string]string) (Proxy, bool) {
	for _, p := range Proxies {
		if p.Carried(spec, annotations) != "" {
			return p, true
		}
	}
	return Proxy{}, false
}

// Carried says how a pod (or pod template) with this spec and these annotations shows that it
// carries p: "container <name>" for a container of the proxy's name, regular or init (a native
// sidecar), or "annotation <name>" for the mesh's status annotation; "" if it does not.
func (p Proxy) Carried(spec *corev1.PodSpec, annotations map[string]string) string {
	named := func(c corev1.Container) bool { return c.Name == p.Container }
	if slices.ContainsFunc(spec.Containers, named) || slices.ContainsFunc(spec.InitContainers, named) {
		return "container " + p.Container
	}
	if _, ok := annotations[p.StatusAnnotation]; ok && p.StatusAnnotation != "" {
		return "annotation " + p.StatusAnnotation
	}
	return ""
}
