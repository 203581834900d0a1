package injector

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
	"podwall.io/podwall/config/platform"
	"podwall.io/podwall/internal/mesh"
)

// systemNamespaces are never injected, whatever their labels: the cluster's own components and
// podwall's must start without the webhook.
var systemNamespaces = []string{"kube-system", "podwall-system"}

// Injector decides whether a pod gets the sidecar and puts it in.
type Injector struct {
	opts     SidecarOptions
	template template
}

// New returns an Injector; zero fields of opts take their defaults.
func New(opts SidecarOptions) *Injector {
	opts.setDefaults()
	in := &Injector{opts: opts}
	in.template = in.newTemplate()
	return in
}

// Namespace is what the injector knows about the pod's namespace.
type Namespace struct {
	Name string
	// Strict namespaces (label podwall.io/strict=true) ignore opt-outs and deny what the sidecar cannot
	// guard: hostNetwork pods, pods sharing a PID namespace with the sidecar, app containers that could
	// flush or bypass the firewall.
	Strict bool
	// Enforce is the Pod Security level the namespace enforces (label pod-security.kubernetes.io/enforce)
	// when it is one an injected pod cannot meet (unmetLevels); empty otherwise.
	Enforce string
}

// status is the value of AnnotationStatus: what the injector added, so that a later pass (the API
// server re-invokes the webhook after other webhooks changed the pod) removes exactly that first.
type status struct {
	Layout         string   `json:"layout"`
	InitContainers []string `json:"initContainers,omitempty"`
	Containers     []string `json:"containers,omitempty"`
	Volumes        []string `json:"volumes"`
}

// Inject mutates pod in place and returns warnings for the client. An error means the pod must be
// denied (a namespace enforcing a Pod Security level the injected pod cannot meet, a pod using
// podwall's volume names, a strict namespace refusing a pod it cannot guard or an app that could
// flush, bypass or kill the firewall); the pod is then left as it came. Besides adding the sidecar, it
// drops NET_RAW from the app containers (dropNetRaw). A pod that is not to be injected comes back
// unchanged, with a warning if the client should know why.
func (in *Injector) Inject(pod *corev1.Pod, ns Namespace) ([]string, error) {
	if slices.Contains(systemNamespaces, ns.Name) {
		return nil, nil
	}
	if pod.Spec.HostNetwork {
		const why = "a hostNetwork pod shares the node's network, which the sidecar must not own, so podwall cannot guard it"
		if ns.Strict {
			return nil, fmt.Errorf("podwall: namespace %s is strict and refuses pods it cannot guard: %s; run the pod in a namespace without podwall.io/strict=true", ns.Name, why)
		}
		return []string{"podwall: pod not injected: " + why}, nil
	}
	var warnings []string
	if strings.EqualFold(pod.Annotations[AnnotationInject], "false") {
		if !ns.Strict {
			return nil, nil
		}
		warnings = append(warnings, "podwall: opt-out ignored: namespace "+ns.Name+" is strict")
	}
	if err := checkPodSecurity(ns); err != nil {
		return nil, err
	}
	work := pod.DeepCopy()
	if err := checkReservedVolumes(work); err != nil {
		return nil, err
	}
	removeInjected(work)
	shared := sharedProcesses(&work.Spec)
	if len(shared) > 0 && ns.Strict {
		return nil, fmt.Errorf("podwall: namespace %s is strict: %s, which lets an app process signal or trace the sidecar's process; remove it", ns.Name, strings.Join(shared, "; "))
	}
	for _, s := range shared {
		warnings = append(warnings, "podwall: "+s+", which lets an app process signal or trace the sidecar's process")
	}
	risky := riskyContainers(&work.Spec)
	if len(risky) > 0 && ns.Strict {
		return nil, fmt.Errorf("podwall: namespace %s is strict: %s, which could flush the pod's firewall", ns.Name, strings.Join(risky, "; "))
	}
	for _, r := range risky {
		warnings = append(warnings, "podwall: "+r+", which could flush the pod's firewall")
	}
	rawWarnings, err := checkNetRaw(work, ns)
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, rawWarnings...)
	entry := platform.Entry{Settings: maps.Clone(in.opts.PlatformDefaults), Resources: in.opts.Resources}
	if in.opts.Platform != nil {
		own, err := in.opts.Platform.For(ns.Name, workloadOf(work))
		if err != nil {
			return nil, err
		}
		if entry.Settings == nil {
			entry.Settings = config.PlatformSettings{}
		}
		maps.Copy(entry.Settings, own.Settings)
		entry.Resources = platform.MergeResources(entry.Resources, own.Resources)
	}
	dropNetRaw(work)
	in.add(work, entry)
	if work.Annotations == nil {
		work.Annotations = map[string]string{}
	}
	work.Annotations[AnnotationStatus] = in.template.status
	*pod = *work
	return warnings, nil
}

// removeInjected takes out what an earlier pass injected: what its status lists and, whatever the
// status says (it may be missing or mangled), anything under podwall's reserved names.
func removeInjected(pod *corev1.Pod) {
	st := injectedStatus(pod)
	containers := append([]string{sidecar.ContainerName, sidecar.InitContainerName}, st.Containers...)
	containers = append(containers, st.InitContainers...)
	volumes := append(injectedVolumes(), st.Volumes...)
	named := func(names []string) func(corev1.Container) bool {
		return func(c corev1.Container) bool { return slices.Contains(names, c.Name) }
	}
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, named(containers))
	pod.Spec.Containers = slices.DeleteFunc(pod.Spec.Containers, named(containers))
	pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return slices.Contains(volumes, v.Name) })
	delete(pod.Annotations, AnnotationStatus)
}

// injectedStatus is what the pod's AnnotationStatus says an earlier pass added: nothing when it is
// missing or mangled.
func injectedStatus(pod *corev1.Pod) status {
	var st status
	_ = json.Unmarshal([]byte(pod.Annotations[AnnotationStatus]), &st)
	return st
}

// sharedProcesses describes how the pod puts its app containers in a PID namespace with the sidecar's
// process, where a root app process can kill it (fail-closed then keeps the last policy, which another
// process holding NET_ADMIN may edit unobserved) or, holding SYS_PTRACE, trace it.
func sharedProcesses(spec *corev1.PodSpec) []string {
	var out []string
	if spec.HostPID {
		out = append(out, "the pod sets hostPID: true (the node's PID namespace)")
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		out = append(out, "the pod sets shareProcessNamespace: true (one PID namespace for all its containers)")
	}
	return out
}

// riskyCapabilities let a process rewrite or bypass the pod's nftables ruleset.
var riskyCapabilities = []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "ALL"}

// riskyContainers describes each container that could flush the firewall: privileged, or granted
// NET_ADMIN or SYS_ADMIN. Mesh init containers (istio-init, linkerd-init) are no exception, whatever
// their name says: strict namespaces need the mesh's CNI plugin, which does without them.
func riskyContainers(spec *corev1.PodSpec) []string {
	var out []string
	appContainers(spec, func(kind string, c *corev1.Container) {
		sc := c.SecurityContext
		if sc == nil {
			return
		}
		if sc.Privileged != nil && *sc.Privileged {
			out = append(out, fmt.Sprintf("%s %q is privileged", kind, c.Name))
			return
		}
		if sc.Capabilities == nil {
			return
		}
		for _, add := range sc.Capabilities.Add {
			if slices.Contains(riskyCapabilities, capName(add)) {
				out = append(out, fmt.Sprintf("%s %q adds %s", kind, c.Name, add))
				return
			}
		}
	})
	return out
}

// add puts the sidecar, its volumes and (on old clusters) the baseline init container into a pod that
// holds none of them, as status says.
func (in *Injector) add(pod *corev1.Pod, entry platform.Entry) {
	var proxy *mesh.Proxy
	if p, ok := mesh.In(&pod.Spec, pod.Annotations); ok {
		proxy = &p
	}
	podwall := in.sidecar(pod, proxy, entry)
	if in.opts.NativeSidecars {
		always := corev1.ContainerRestartPolicyAlways
		podwall.RestartPolicy = &always
		pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, podwall)
	} else {
		if _, ok := pod.Annotations[defaultContainerAnnotation]; !ok && len(pod.Spec.Containers) > 0 {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[defaultContainerAnnotation] = pod.Spec.Containers[0].Name
		}
		pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, in.baseline(podwall))
		pod.Spec.Containers = slices.Insert(pod.Spec.Containers, 0, podwall)
	}
	pod.Spec.Volumes = in.appendVolumes(pod.Spec.Volumes, pod)
	// A projected token needs a named service account. The API server's ServiceAccount admission
	// plugin names "default" before webhooks run; where it is off, do as it would.
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}
}

// status is the status add records: what it adds in the injector's layout.
func (in *Injector) status() status {
	if in.opts.NativeSidecars {
		return status{Layout: "native", InitContainers: []string{sidecar.ContainerName}, Volumes: injectedVolumes()}
	}
	return status{Layout: "init-container", InitContainers: []string{sidecar.InitContainerName},
		Containers: []string{sidecar.ContainerName}, Volumes: injectedVolumes()}
}

// defaultContainerAnnotation keeps `kubectl logs` and `kubectl exec` on the app when podwall is the
// first container (the init-container layout).
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
