package injector

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/sidecar"
)

// netRaw is the capability the injector takes from app containers. The container runtime grants it
// by default (containerd, CRI-O), and with it a compromised app sets SO_MARK (since Linux 5.17 that
// needs NET_RAW or NET_ADMIN) and opens raw and packet sockets: AF_PACKET frames never cross the inet
// hooks the firewall sits on.
const netRaw corev1.Capability = "NET_RAW"

// netRawAllows is what keeping NET_RAW allows, for warnings and refusals.
const netRawAllows = "which allows SO_MARK, raw and packet sockets that bypass the pod's firewall"

// Ping keeps working without NET_RAW through the kernel's ICMP datagram sockets, which
// net.ipv4.ping_group_range opens to the groups it names (IPv6 too, despite the name). The sysctl is
// namespaced to the pod's network namespace and one of Kubernetes' safe sysctls since 1.18, which
// every kubelet allows without configuration.
const (
	sysctlPingGroupRange = "net.ipv4.ping_group_range"
	pingAllGroups        = "0 2147483647"
)

// capName is a capability as the runtime reads it: any letter case, with or without "CAP_".
func capName(c corev1.Capability) corev1.Capability {
	return corev1.Capability(strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_"))
}

func hasCap(list []corev1.Capability, want ...corev1.Capability) bool {
	return slices.ContainsFunc(list, func(c corev1.Capability) bool { return slices.Contains(want, capName(c)) })
}

// allowsNetRaw says whether the pod opts out of the NET_RAW drop.
func allowsNetRaw(pod *corev1.Pod) bool {
	return strings.EqualFold(pod.Annotations[AnnotationAllowNetRaw], "true")
}

// addsNetRaw says whether a container with security context sc asks for NET_RAW by name. The runtime
// applies a named drop after the adds, so a container that both adds and drops it does not hold it; an
// add of ALL is not a request for NET_RAW by name, and the injector's drop takes NET_RAW from it.
func addsNetRaw(sc *corev1.SecurityContext) bool {
	if sc == nil || sc.Capabilities == nil {
		return false
	}
	caps := sc.Capabilities
	return hasCap(caps.Add, netRaw) && !hasCap(caps.Drop, netRaw)
}

// keepsNetRaw says whether a container with security context sc holds NET_RAW whatever its drop list:
// it adds it by name, or is privileged (the runtime ignores a privileged container's capabilities).
func keepsNetRaw(sc *corev1.SecurityContext) bool {
	return sc != nil && (sc.Privileged != nil && *sc.Privileged || addsNetRaw(sc))
}

// withoutNetRaw returns sc (a new one if nil) with NET_RAW among its capability drops, keeping what it
// sets.
func withoutNetRaw(sc *corev1.SecurityContext) *corev1.SecurityContext {
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if sc.Capabilities == nil {
		sc.Capabilities = &corev1.Capabilities{}
	}
	if !hasCap(sc.Capabilities.Drop, netRaw, "ALL") {
		sc.Capabilities.Drop = append(sc.Capabilities.Drop, netRaw)
	}
	return sc
}

// appContainers calls fn with each of the pod's containers, init containers included, but podwall's.
func appContainers(spec *corev1.PodSpec, fn func(kind string, c *corev1.Container)) {
	for _, list := range []struct {
		kind       string
		containers []corev1.Container
	}{{"init container", spec.InitContainers}, {"container", spec.Containers}} {
		for i := range list.containers {
			if c := &list.containers[i]; c.Name != sidecar.ContainerName && c.Name != sidecar.InitContainerName {
				fn(list.kind, c)
			}
		}
	}
}

// netRawAdders describes each app container that adds NET_RAW by name.
func netRawAdders(spec *corev1.PodSpec) []string {
	var out []string
	appContainers(spec, func(kind string, c *corev1.Container) {
		if addsNetRaw(c.SecurityContext) {
			out = append(out, fmt.Sprintf("%s %q adds NET_RAW", kind, c.Name))
		}
	})
	return out
}

// dropNetRaw drops NET_RAW from every app container that does not keep it anyway (keepsNetRaw; a
// privileged one is riskyContainers' to report), keeping what the container set, and opens ICMP
// datagram sockets to every group unless the pod sets the range itself. A pod that opts out keeps
// NET_RAW.
func dropNetRaw(pod *corev1.Pod) {
	if allowsNetRaw(pod) {
		return
	}
	appContainers(&pod.Spec, func(_ string, c *corev1.Container) {
		if !keepsNetRaw(c.SecurityContext) {
			c.SecurityContext = withoutNetRaw(c.SecurityContext)
		}
	})
	sc := pod.Spec.SecurityContext
	if sc == nil {
		sc = &corev1.PodSecurityContext{}
		pod.Spec.SecurityContext = sc
	}
	if !slices.ContainsFunc(sc.Sysctls, func(s corev1.Sysctl) bool { return s.Name == sysctlPingGroupRange }) {
		sc.Sysctls = append(sc.Sysctls, corev1.Sysctl{Name: sysctlPingGroupRange, Value: pingAllGroups})
	}
}

// netRawHolders names the app containers that hold NET_RAW once dropNetRaw has run: every one when
// the pod opts out, else those that add it by name or are privileged. The sidecar announces them.
func netRawHolders(pod *corev1.Pod) []string {
	optOut := allowsNetRaw(pod)
	var out []string
	appContainers(&pod.Spec, func(_ string, c *corev1.Container) {
		if optOut || keepsNetRaw(c.SecurityContext) {
			out = append(out, c.Name)
		}
	})
	return out
}

// checkNetRaw refuses, in a strict namespace, a pod that would keep NET_RAW (an opt-out, a container
// adding it); elsewhere it returns the warnings that say what keeping it allows.
func checkNetRaw(pod *corev1.Pod, ns Namespace) ([]string, error) {
	adders := netRawAdders(&pod.Spec)
	optOut := allowsNetRaw(pod)
	const ping = "ping works without it: podwall sets " + sysctlPingGroupRange + " for ICMP datagram sockets"
	if ns.Strict {
		switch {
		case optOut:
			return nil, fmt.Errorf("podwall: namespace %s is strict: annotation %s=true would keep NET_RAW in every container, %s; remove the annotation (%s)",
				ns.Name, AnnotationAllowNetRaw, netRawAllows, ping)
		case len(adders) > 0:
			return nil, fmt.Errorf("podwall: namespace %s is strict: %s, %s; remove it from securityContext.capabilities.add (%s)",
				ns.Name, strings.Join(adders, "; "), netRawAllows, ping)
		}
		return nil, nil
	}
	if optOut {
		return []string{fmt.Sprintf("podwall: %s=true: the pod's containers keep NET_RAW, %s", AnnotationAllowNetRaw, netRawAllows)}, nil
	}
	var warnings []string
	for _, a := range adders {
		warnings = append(warnings, "podwall: "+a+", "+netRawAllows)
	}
	return warnings, nil
}
