package injector

import (
	"encoding/json"
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

// template is what the injector adds that is the same in every pod, built once (New) and deep-copied
// into each pod, so that an admission neither builds it again nor shares any of it with a pod.
type template struct {
	// container is the podwall container but for its environment and resources (sidecar).
	container corev1.Container
	// identity passes the pod's identity (downward API) and settings the injector's settings, the
	// fixed part of the environment (env).
	identity, settings []corev1.EnvVar
	// volumes are the podwall container's volumes (volumes).
	volumes []corev1.Volume
	// status is the value of AnnotationStatus (add).
	status string
}

// newTemplate builds what in adds to every pod.
func (in *Injector) newTemplate() template {
	field := func(key sidecar.Key, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: key.Env(), ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	st, err := json.Marshal(in.status())
	if err != nil {
		panic(err) // a struct of strings always encodes
	}
	return template{
		container: in.container(),
		identity: []corev1.EnvVar{
			field(sidecar.KeyPodName, "metadata.name"),
			field(sidecar.KeyPodNamespace, "metadata.namespace"),
			field(sidecar.KeyPodIPs, "status.podIPs"),
			field(sidecar.KeyPodServiceAccount, "spec.serviceAccountName"),
		},
		settings: []corev1.EnvVar{
			envValue(sidecar.KeyConfig, sidecar.ConfigFile),
			envValue(sidecar.KeyListenAddr, ":"+strconv.Itoa(int(in.opts.Port))),
			envValue(sidecar.KeyPolicyCacheDir, sidecar.CacheDir),
			envValue(sidecar.KeyPolicyGenURL, in.opts.PolicyGenURL),
			envValue(sidecar.KeyPolicyGenTokenFile, sidecar.TokenFile),
		},
		volumes: in.newVolumes(),
		status:  string(st),
	}
}

// sidecar builds the podwall container for pod: the template's, with the pod's environment and
// resources.
func (in *Injector) sidecar(pod *corev1.Pod, proxy *mesh.Proxy, entry platform.Entry) corev1.Container {
	var c corev1.Container
	in.template.container.DeepCopyInto(&c)
	c.Env = in.env(pod, proxy, entry.Settings)
	entry.Resources.DeepCopyInto(&c.Resources)
	return c
}

// container builds the podwall container but for its environment and resources. It runs as root with
// NET_ADMIN only: nftables and NFQUEUE are netlink, which needs NET_ADMIN (not NET_RAW), and
// Kubernetes cannot grant ambient capabilities, so a non-root user would hold NET_ADMIN in its
// bounding set but not use it. Every other capability is dropped, privilege escalation is off and the
// root filesystem read-only.
func (in *Injector) container() corev1.Container {
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
		Ports:           []corev1.ContainerPort{{Name: sidecar.PortName, ContainerPort: in.opts.Port, Protocol: corev1.ProtocolTCP}},
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
	t := &in.template
	env := make([]corev1.EnvVar, 0, len(t.identity)+len(t.settings)+4+len(platform))
	env = appendCopies(env, t.identity)
	if w := workloadOf(pod); w != "" {
		env = append(env, envValue(sidecar.KeyWorkload, w))
	}
	env = appendCopies(env, t.settings)
	if holders := netRawHolders(pod); len(holders) > 0 {
		env = append(env, envValue(sidecar.KeyAppNetRaw, strings.Join(holders, ",")))
	}
	if proxy != nil {
		env = append(env,
			envValue(sidecar.KeyMeshOutboundPorts, strconv.Itoa(proxy.Outbound)),
			envValue(sidecar.KeyMeshInboundPorts, strconv.Itoa(proxy.Inbound)),
		)
	}
	for _, key := range slices.Sorted(maps.Keys(platform)) {
		env = append(env, envValue(sidecar.Key(key), platform[key]))
	}
	return env
}

func envValue(key sidecar.Key, v string) corev1.EnvVar {
	return corev1.EnvVar{Name: key.Env(), Value: v}
}

// appendCopies appends deep copies of vars to env.
func appendCopies(env, vars []corev1.EnvVar) []corev1.EnvVar {
	for i := range vars {
		env = append(env, corev1.EnvVar{})
		vars[i].DeepCopyInto(&env[len(env)-1])
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

// appendVolumes appends pod's podwall volumes to volumes: the per-workload ConfigMap (optional: absent
// means the sidecar's defaults), the projected token with audience podwall and the policy cache, the
// template's with the ConfigMap the pod names.
func (in *Injector) appendVolumes(volumes []corev1.Volume, pod *corev1.Pod) []corev1.Volume {
	n := len(volumes)
	volumes = slices.Grow(volumes, len(in.template.volumes))[:n+len(in.template.volumes)]
	for i := range in.template.volumes {
		in.template.volumes[i].DeepCopyInto(&volumes[n+i])
	}
	if cm := pod.Annotations[AnnotationConfig]; cm != "" {
		volumes[n].ConfigMap.Name = cm
	}
	return volumes
}

// newVolumes builds the podwall container's volumes, the config volume with NamespaceConfigMap.
func (in *Injector) newVolumes() []corev1.Volume {
	sources := []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
		Audience: policy.TokenAudience, ExpirationSeconds: ptr.To(int64(in.opts.TokenExpiration.Seconds())), Path: sidecar.TokenFileName,
	}}}
	return []corev1.Volume{
		{Name: sidecar.VolumeConfig, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: NamespaceConfigMap}, Optional: ptr.To(true),
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
