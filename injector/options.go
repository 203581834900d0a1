package injector

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"podwall.io/podwall/config"
)

// Names shared with the rest of podwall (see DESIGN.md) and with the sidecar's configuration.
const (
	// ContainerName is the injected sidecar; the name is reserved: a pod's own container of that name
	// is replaced.
	ContainerName = "podwall"
	// InitContainerName installs the deny-all baseline on clusters without native sidecars.
	InitContainerName = "podwall-init"
	// AnnotationInject set to "false" opts a pod out, unless its namespace is strict.
	AnnotationInject = "podwall.io/inject"
	// AnnotationConfig names the pod's per-workload ConfigMap.
	AnnotationConfig = "podwall.io/config"
	// AnnotationStatus records what was injected, so that a second pass replaces it.
	AnnotationStatus = "podwall.io/status"
	// NamespaceConfigMap is the ConfigMap mounted when the pod names none (optional: absent is fine).
	NamespaceConfigMap = "podwall-config"
	// BaselineFlag makes the sidecar binary install the deny-all baseline and exit (old clusters).
	BaselineFlag = "--baseline-only"
	// SidecarBinary is the sidecar image's entry point.
	SidecarBinary = "/podwall-sidecar"
	// TokenAudience is the audience of the sidecar's projected token, checked by policygen.
	TokenAudience = "podwall"
)

// Paths inside the sidecar; the config, token and cache paths are the sidecar's own defaults, set
// explicitly so that the mounts and the sidecar cannot drift apart.
const (
	configDir    = "/etc/podwall"
	configFile   = configDir + "/config.yaml"
	tokenDir     = "/var/run/secrets/podwall.io"
	tokenFile    = tokenDir + "/token"
	caFile       = tokenDir + "/ca.crt"
	cacheDir     = "/var/lib/podwall"
	volumeConfig = "podwall-config"
	volumeToken  = "podwall-token"
	volumeCache  = "podwall-cache"
)

// Options say what the injector puts into pods. The zero value of a field means its default.
type Options struct {
	// Image of the sidecar; default podwall/sidecar:dev.
	Image string
	// PullPolicy of the image; default IfNotPresent.
	PullPolicy corev1.PullPolicy
	// Resources of the sidecar (and of the baseline init container); none by default.
	Resources corev1.ResourceRequirements
	// Privileged runs the sidecar privileged instead of with NET_ADMIN alone.
	Privileged bool
	// Port of the sidecar's /readyz, /healthz and /metrics; default 9947.
	Port int32
	// PolicyGenURL is policygen's policy API.
	PolicyGenURL string
	// PolicyGenCAConfigMap names a ConfigMap (key ca.crt) in the pod's namespace that verifies
	// policygen; empty: the sidecar uses the system roots.
	PolicyGenCAConfigMap string
	// TokenExpiration of the projected token; default 1h.
	TokenExpiration time.Duration
	// NativeSidecars chooses the native-sidecar layout (Kubernetes ≥ 1.29).
	NativeSidecars bool
}

func (o *Options) setDefaults() {
	if o.Image == "" {
		o.Image = "podwall/sidecar:dev"
	}
	if o.PullPolicy == "" {
		o.PullPolicy = corev1.PullIfNotPresent
	}
	if o.Port == 0 {
		o.Port = 9947
	}
	if o.TokenExpiration == 0 {
		o.TokenExpiration = time.Hour
	}
}

// optionsFrom translates the loaded configuration; native is the layout decided at start.
func optionsFrom(c config.InjectedSidecar, native bool) (Options, error) {
	res := corev1.ResourceRequirements{}
	for _, q := range []struct {
		list  *corev1.ResourceList
		name  corev1.ResourceName
		value string
	}{
		{&res.Requests, corev1.ResourceCPU, c.CPURequest}, {&res.Requests, corev1.ResourceMemory, c.MemoryRequest},
		{&res.Limits, corev1.ResourceCPU, c.CPULimit}, {&res.Limits, corev1.ResourceMemory, c.MemoryLimit},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return Options{}, fmt.Errorf("sidecar %s %q: %w", q.name, q.value, err)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	return Options{
		Image:                c.Image,
		PullPolicy:           corev1.PullPolicy(c.PullPolicy),
		Resources:            res,
		Privileged:           c.Privileged,
		Port:                 int32(c.Port),
		PolicyGenURL:         c.PolicyGenURL,
		PolicyGenCAConfigMap: c.PolicyGenCAConfigMap,
		TokenExpiration:      c.TokenExpiration,
		NativeSidecars:       native,
	}, nil
}
