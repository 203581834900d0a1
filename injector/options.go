package injector

import (
	"cmp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/version"
)

// The annotations and ConfigMap the injector reads and writes; the container, volume and path names
// it shares with the sidecar are in api/sidecar.
const (
	// AnnotationInject set to "false" opts a pod out, unless its namespace is strict.
	AnnotationInject = "podwall.io/inject"
	// AnnotationConfig names the pod's per-workload ConfigMap.
	AnnotationConfig = "podwall.io/config"
	// AnnotationAllowNetRaw set to "true" lets the pod's containers keep NET_RAW, which the injector
	// otherwise drops, unless its namespace is strict.
	AnnotationAllowNetRaw = "podwall.io/allow-net-raw"
	// AnnotationStatus records what was injected, so that a second pass replaces it.
	AnnotationStatus = "podwall.io/status"
	// NamespaceConfigMap is the ConfigMap mounted when the pod names none (optional: absent is fine).
	NamespaceConfigMap = "podwall-config"
)

// Options configure Run; zero values take the defaults in parentheses.
type Options struct {
	// Port is the webhook's HTTPS port (9443).
	Port int
	// MetricsAddr serves Prometheus metrics, among them the webhook's latency histogram (":8080");
	// "0" disables it.
	MetricsAddr string
	// HealthAddr serves /healthz and /readyz (":8081"); "0" disables it.
	HealthAddr string
	// TLS says where the webhook's serving certificate comes from (certs.Serving.SetDefaults for
	// "podwall-injector" in "podwall-system").
	TLS certs.Serving
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle a managed certificate keeps
	// ("podwall-injector").
	WebhookConfig string
	// PolicyGenCAConfigMap is the ConfigMap of the injector's namespace (TLS.Namespace) where
	// policygen publishes the CA bundle that verifies it (key ca.crt), which each injected sidecar
	// gets; empty: the sidecars use the system roots.
	PolicyGenCAConfigMap string
	// NativeSidecars forces the container layout; nil decides at start from the API server's version
	// (native sidecars from Kubernetes 1.29). Run sets Sidecar.NativeSidecars from it.
	NativeSidecars *bool
	// Sidecar is what the injector puts into each pod.
	Sidecar SidecarOptions
	// Registerer receives the webhook's metrics (controller-runtime's metrics.Registry, which the
	// manager serves on MetricsAddr).
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	o.Port = cmp.Or(o.Port, 9443)
	o.MetricsAddr = cmp.Or(o.MetricsAddr, ":8080")
	o.HealthAddr = cmp.Or(o.HealthAddr, ":8081")
	o.WebhookConfig = cmp.Or(o.WebhookConfig, "podwall-injector")
	if o.Registerer == nil {
		o.Registerer = metrics.Registry
	}
	o.TLS.SetDefaults("podwall-injector", "podwall-system")
}

// SidecarOptions say what the injector puts into pods; zero values take the defaults in parentheses.
type SidecarOptions struct {
	// Image of the sidecar (podwall/sidecar:<the injector's own version>, version.Image).
	Image string
	// PullPolicy of the image (IfNotPresent).
	PullPolicy corev1.PullPolicy
	// Resources of the sidecar (and of the baseline init container); none by default.
	Resources corev1.ResourceRequirements
	// Privileged runs the sidecar privileged instead of with NET_ADMIN alone.
	Privileged bool
	// Port of the sidecar's /readyz, /healthz and /metrics (sidecar.DefaultPort).
	Port int32
	// PolicyGenURL is policygen's policy API.
	PolicyGenURL string
	// TokenExpiration of the projected token (1h).
	TokenExpiration time.Duration
	// NativeSidecars chooses the native-sidecar layout (Kubernetes ≥ 1.29).
	NativeSidecars bool
	// PlatformDefaults are every sidecar's platform settings (sidecar key → value, as the sidecar's
	// environment spells it), under what Platform says for the pod.
	PlatformDefaults map[string]string
	// Platform gives each pod's platform settings, passed to its sidecar as environment variables over
	// PlatformDefaults; nil gives none. Run reads them from the ConfigMap podwall-platform in the
	// injector's namespace.
	Platform PlatformSource
}

func (o *SidecarOptions) setDefaults() {
	o.Image = cmp.Or(o.Image, version.Image("sidecar"))
	o.PullPolicy = cmp.Or(o.PullPolicy, corev1.PullIfNotPresent)
	o.Port = cmp.Or(o.Port, sidecar.DefaultPort)
	o.TokenExpiration = cmp.Or(o.TokenExpiration, time.Hour)
}
