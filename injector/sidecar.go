package injector

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config/platform"
	"podwall.io/podwall/internal/mesh"
)

// sidecar builds the podwall container for pod. It runs as root with NET_ADMIN only: nftables and
// NFQUEUE are netlink, which needs NET_ADMIN (not NET_RAW), and Kubernetes cannot grant ambient
// capabilities, so a non-root user would hold NET_ADMIN in its bounding set but not use it. Every other
// capability is dropped, privilege escalation is off and the root filesystem read-only.
func (in *Injector) sidecar(pod *corev1.Pod, proxy *mesh.Proxy, entry platform.Entry) corev1.Container {
	port := intstr.FromInt32(in.opts.Port)
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            sidecar.ContainerName,
		Image:           in.opts.Image,
		ImagePullPolicy: in.opts.PullPolicy,
		Command:         []string{sidecar.Binary},
		Env:             in.env(pod, proxy, entry.Settings),
		Ports:           []corev1.ContainerPort{{Name: sidecar.PortName, ContainerPort: in.opts.Port, Protocol: corev1.ProtocolTCP}},
		Resources:       *entry.Resources.DeepCopy(),
		// Ready means the ruleset is in place: the startup probe holds back every later container
		// (native layout) until then; 1s steps for up to 2 minutes.
		StartupProbe:             probe("/readyz", 1, 120),
		ReadinessProbe:           probe("/readyz", 5, 2),
		LivenessProbe:            probe("/healthz", 10, 3),
		VolumeMounts:             mounts(),
		SecurityContext:          in.securityContext(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// baseline is the init container of the old-cluster layout: the podwall container's binary and
// settings, run with baseline-only, so that the deny-all baseline is in place before any other
// container starts.
func (in *Injector) baseline(podwall corev1.Container) corev1.Container {
	c := *podwall.DeepCopy()
	c.Name = sidecar.InitContainerName
	c.Args = []string{sidecar.KeyBaselineOnly.Flag()}
	c.Ports = nil
	c.StartupProbe, c.ReadinessProbe, c.LivenessProbe = nil, nil, nil
	return c
}

func (in *Injector) securityContext() *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		RunAsUser:              ptr.To[int64](0),
		RunAsGroup:             ptr.To[int64](0),
		RunAsNonRoot:           ptr.To(false),
		ReadOnlyRootFilesystem: ptr.To(true),
		SeccompProfile:         &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if in.opts.Privileged {
		sc.Privileged = ptr.To(true)
		return sc
	}
	sc.AllowPrivilegeEscalation = ptr.To(false)
	sc.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}
	return sc
}

// env passes the pod's identity (downward API), the injector's settings and the platform's settings
// for the pod (sorted by key) as the sidecar's PODWALL_* variables: the platform layer of the sidecar's
// configuration, which the pod's own config file may only tighten.
func (in *Injector) env(pod *corev1.Pod, proxy *mesh.Proxy, platform map[string]string) []corev1.EnvVar {
	field := func(key sidecar.Key, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: key.Env(), ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	value := func(key sidecar.Key, v string) corev1.EnvVar { return corev1.EnvVar{Name: key.Env(), Value: v} }
	env := []corev1.EnvVar{
		field(sidecar.KeyPodName, "metadata.name"),
		field(sidecar.KeyPodNamespace, "metadata.namespace"),
		field(sidecar.KeyPodIPs, "status.podIPs"),
		field(sidecar.KeyPodServiceAccount, "spec.serviceAccountName"),
	}
	if w := workloadOf(pod); w != "" {
		env = append(env, value(sidecar.KeyWorkload, w))
	}
	env = append(env,
		value(sidecar.KeyConfig, sidecar.ConfigFile),
		value(sidecar.KeyListenAddr, ":"+strconv.Itoa(int(in.opts.Port))),
		value(sidecar.KeyPolicyCacheDir, sidecar.CacheDir),
		value(sidecar.KeyPolicyGenURL, in.opts.PolicyGenURL),
		value(sidecar.KeyPolicyGenTokenFile, sidecar.TokenFile),
	)
	if holders := netRawHolders(pod); len(holders) > 0 {
		env = append(env, value(sidecar.KeyAppNetRaw, strings.Join(holders, ",")))
	}
	if proxy != nil {
		env = append(env,
			value(sidecar.KeyMeshOutboundPorts, strconv.Itoa(proxy.Outbound)),
			value(sidecar.KeyMeshInboundPorts, strconv.Itoa(proxy.Inbound)),
		)
	}
	for _, key := range slices.Sorted(maps.Keys(platform)) {
		env = append(env, value(sidecar.Key(key), platform[key]))
	}
	return env
}

func mounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{
		// The whole ConfigMap volume, not a subPath: the kubelet updates only whole volumes, and the
		// sidecar hot-reloads.
		{Name: sidecar.VolumeConfig, MountPath: sidecar.ConfigDir, ReadOnly: true},
		{Name: sidecar.VolumeToken, MountPath: sidecar.TokenDir, ReadOnly: true},
		{Name: sidecar.VolumeCache, MountPath: sidecar.CacheDir},
	}
}

// volumes are the per-workload ConfigMap (optional: absent means the sidecar's defaults), the
// projected token with audience podwall and the policy cache.
func (in *Injector) volumes(pod *corev1.Pod) []corev1.Volume {
	cm := pod.Annotations[AnnotationConfig]
	if cm == "" {
		cm = NamespaceConfigMap
	}
	sources := []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
		Audience: policy.TokenAudience, ExpirationSeconds: ptr.To(int64(in.opts.TokenExpiration.Seconds())), Path: sidecar.TokenFileName,
	}}}
	return []corev1.Volume{
		{Name: sidecar.VolumeConfig, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Optional: ptr.To(true),
		}}},
		{Name: sidecar.VolumeToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: sources, DefaultMode: ptr.To[int32](0o400),
		}}},
		{Name: sidecar.VolumeCache, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr.To(resource.MustParse("16Mi")),
		}}},
	}
}

// workloadOf names the pod's workload as "Kind/name" from its controller reference alone (the webhook
// reads nothing from the API): a ReplicaSet carrying the pod-template-hash stands for its Deployment.
// A bare pod is its own workload; one whose name the API server has yet to generate gets none (the
// sidecar then labels its lines without a workload).
func workloadOf(pod *corev1.Pod) string {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		if pod.Name == "" {
			return ""
		}
		return "Pod/" + pod.Name
	}
	if hash := pod.Labels["pod-template-hash"]; owner.Kind == "ReplicaSet" && hash != "" {
		if name, ok := strings.CutSuffix(owner.Name, "-"+hash); ok {
			return "Deployment/" + name
		}
	}
	return fmt.Sprintf("%s/%s", owner.Kind, owner.Name)
}
