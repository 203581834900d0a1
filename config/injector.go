package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/version"
)

// Injector is the injector's configuration (podwall-injector). Every field is one key, spelled as its
// `mapstructure` tag; --help lists them with their defaults.
type Injector struct {
	// File is the config file that was read (key config); the injector has none by default.
	File string `mapstructure:"config"`
	// Serve says where the webhook, metrics and health endpoints listen.
	Serve InjectorServe `mapstructure:",squash"`
	// TLS says where the webhook's serving certificate comes from.
	TLS InjectorTLS `mapstructure:",squash"`
	// NativeSidecars chooses the container layout (key native-sidecars): auto asks the API server's
	// version at start (native sidecars from Kubernetes 1.29), always and never force one layout.
	NativeSidecars NativeSidecars `mapstructure:"native-sidecars"`
	// Sidecar is what the injector puts into each pod.
	Sidecar InjectedSidecar `mapstructure:",squash"`
}

// InjectorServe holds the injector's listening ports.
type InjectorServe struct {
	// Port is the webhook's HTTPS port (key port).
	Port int `mapstructure:"port"`
	// MetricsAddr serves Prometheus metrics, among them the webhook's latency histogram (key
	// metrics-addr); "0" disables it.
	MetricsAddr string `mapstructure:"metrics-addr"`
	// HealthAddr serves /healthz and /readyz (key health-addr).
	HealthAddr string `mapstructure:"health-addr"`
}

// InjectorTLS says how the webhook gets its certificate.
type InjectorTLS struct {
	ServingTLS `mapstructure:",squash"`
	// Namespace is the injector's own namespace (key namespace, from the downward API), where the
	// Secret lives and which its Service's DNS names carry.
	Namespace string `mapstructure:"namespace"`
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle managed mode patches (key
	// webhook-config-name).
	WebhookConfig string `mapstructure:"webhook-config-name"`
}

// NativeSidecars chooses between the native-sidecar layout and the older one.
type NativeSidecars string

// The layout choices.
const (
	NativeAuto   NativeSidecars = "auto"
	NativeAlways NativeSidecars = "always"
	NativeNever  NativeSidecars = "never"
)

// InjectedSidecar is the sidecar the injector adds to each pod.
type InjectedSidecar struct {
	// Image and PullPolicy of the podwall container (keys sidecar-image, sidecar-image-pull-policy).
	// The image defaults to podwall/sidecar:<the injector's own version> (package internal/version).
	Image      string `mapstructure:"sidecar-image"`
	PullPolicy string `mapstructure:"sidecar-image-pull-policy"`
	// Resources are Kubernetes quantities; an empty one is left unset (keys sidecar-cpu-request,
	// sidecar-memory-request, sidecar-cpu-limit, sidecar-memory-limit). Package config/platform reads
	// and checks them (SidecarResources), apart from this package, which the sidecar links: they need
	// Kubernetes' API types.
	CPURequest    string `mapstructure:"sidecar-cpu-request"`
	MemoryRequest string `mapstructure:"sidecar-memory-request"`
	CPULimit      string `mapstructure:"sidecar-cpu-limit"`
	MemoryLimit   string `mapstructure:"sidecar-memory-limit"`
	// Privileged runs the sidecar privileged instead of with NET_ADMIN alone (key sidecar-privileged),
	// for runtimes whose capability handling falls short.
	Privileged bool `mapstructure:"sidecar-privileged"`
	// Port serves the sidecar's /readyz, /healthz and /metrics (key sidecar-port); the injector passes
	// it to the sidecar as its listen-addr, so the probes and the sidecar agree.
	Port int `mapstructure:"sidecar-port"`
	// PolicyGenURL is policygen's policy API (key policygen-url).
	PolicyGenURL string `mapstructure:"policygen-url"`
	// PolicyGenCAConfigMap names the ConfigMap of the injector's namespace where policygen publishes
	// the CA bundle that verifies it, key ca.crt (key policygen-ca-configmap); each injected sidecar
	// gets the bundle. Empty: the sidecars use the system roots.
	PolicyGenCAConfigMap string `mapstructure:"policygen-ca-configmap"`
	// TokenExpiration is the lifetime asked for the projected token (key token-expiration); the
	// kubelet rotates it at 80%.
	TokenExpiration time.Duration `mapstructure:"token-expiration"`
	// Platform holds the platform's defaults for every sidecar, the lowest layer under the platform's
	// ConfigMap (see package config/platform and PlatformDefaults).
	Platform InjectedPlatform `mapstructure:",squash"`
}

// InjectedPlatform are the sidecar settings the injector passes to every sidecar unless the
// platform's ConfigMap says otherwise: the platform keys (ParsePlatformSettings) with "sidecar-" before them,
// each spelled as the sidecar's environment takes it; empty leaves the sidecar's own default.
type InjectedPlatform struct {
	Mode             string `mapstructure:"sidecar-mode"`
	FailMode         string `mapstructure:"sidecar-fail-mode"`
	LogAllows        string `mapstructure:"sidecar-log-allows"`
	LogAllowInterval string `mapstructure:"sidecar-log-allow-interval"`
	LogRate          string `mapstructure:"sidecar-log-rate"`
	LogBurst         string `mapstructure:"sidecar-log-burst"`
	DenyMemoTimeout  string `mapstructure:"sidecar-deny-memo-timeout"`
	DNSMinTTL        string `mapstructure:"sidecar-dns-min-ttl"`
	DNSMaxTTL        string `mapstructure:"sidecar-dns-max-ttl"`
	DNSMaxNames      string `mapstructure:"sidecar-dns-max-names"`
	DNSMaxAddrs      string `mapstructure:"sidecar-dns-max-addrs"`
}

// PlatformDefaults are the settings of p that are set, by sidecar key (mode, fail-mode, ...).
func (p InjectedPlatform) PlatformDefaults() map[string]string {
	out := map[string]string{}
	for key, v := range settingsByKey(p) {
		if v := v.(string); v != "" {
			out[strings.TrimPrefix(key, "sidecar-")] = v
		}
	}
	return out
}

// injectorLoader declares the injector's keys; the flag defaults are the defaults.
var injectorLoader = loader{
	name: "podwall-injector",
	flags: func(f *pflag.FlagSet) {
		f.Int("port", 9443, "webhook HTTPS port")
		f.String("metrics-addr", ":8080", `address serving /metrics ("0": off)`)
		f.String("health-addr", ":8081", "address serving /healthz and /readyz")
		servingTLSFlags(f, "/var/run/podwall-injector/certs", "podwall-injector", "podwall-injector-tls")
		f.String("namespace", "podwall-system", "the injector's namespace")
		f.String("webhook-config-name", "podwall-injector", "with cert-mode=managed: MutatingWebhookConfiguration whose caBundle is kept")
		f.String("native-sidecars", string(NativeAuto), "container layout: auto (by server version, 1.29+), always or never")
		f.String("sidecar-image", version.Image("sidecar"), "image of the injected podwall container (default: the sidecar of the injector's own version)")
		f.String("sidecar-image-pull-policy", "IfNotPresent", "Always, IfNotPresent or Never")
		f.String("sidecar-cpu-request", "10m", "CPU request of the sidecar (empty: none)")
		f.String("sidecar-memory-request", "32Mi", "memory request of the sidecar (empty: none)")
		f.String("sidecar-cpu-limit", "", "CPU limit of the sidecar (empty: none)")
		f.String("sidecar-memory-limit", "192Mi", "memory limit of the sidecar (empty: none)")
		f.Bool("sidecar-privileged", false, "run the sidecar privileged instead of with NET_ADMIN only")
		f.Int("sidecar-port", sidecar.DefaultPort, "sidecar's port for /readyz, /healthz and /metrics")
		f.String("policygen-url", "https://podwall-policygen.podwall-system.svc:8443", "policygen's policy API for the sidecars")
		f.String("policygen-ca-configmap", "podwall-policygen-ca", "ConfigMap (key ca.crt) of the injector's namespace holding policygen's CA bundle (empty: system roots)")
		f.Duration("token-expiration", time.Hour, "lifetime of the sidecar's projected token (audience podwall)")
		for _, key := range platformKeys {
			f.String("sidecar-"+key, "", "every sidecar's "+key+" unless the platform's ConfigMap sets it (empty: the sidecar's default)")
		}
	},
}

// LoadInjector reads the injector's configuration from args (without the program name), the PODWALL_*
// environment and the file named by --config, and validates it.
func LoadInjector(args []string) (Injector, error) {
	var c Injector
	if err := injectorLoader.load(args, &c); err != nil {
		return Injector{}, err
	}
	if err := c.validate(); err != nil {
		return Injector{}, fmt.Errorf("invalid injector config: %w", err)
	}
	return c, nil
}

func (c Injector) validate() error {
	var p problems
	checkPort(&p, "port", c.Serve.Port)
	checkPort(&p, "sidecar-port", c.Sidecar.Port)
	c.TLS.check(&p)
	oneOf(&p, "native-sidecars", c.NativeSidecars, NativeAuto, NativeAlways, NativeNever)
	oneOf(&p, "sidecar-image-pull-policy", c.Sidecar.PullPolicy, "Always", "IfNotPresent", "Never")
	if !IsDNSLabel(c.TLS.Namespace) {
		p.add("namespace", "%q is not a DNS label", c.TLS.Namespace)
	}
	if c.TLS.Mode == CertManaged && !IsDNSSubdomain(c.TLS.WebhookConfig) {
		p.add("webhook-config-name", "%q is not a DNS subdomain name", c.TLS.WebhookConfig)
	}
	c.Sidecar.check(&p)
	return errors.Join(p...)
}

func (s InjectedSidecar) check(p *problems) {
	if s.Image == "" {
		p.add("sidecar-image", "required")
	}
	if u, err := url.Parse(s.PolicyGenURL); err != nil || u.Scheme != "https" || u.Host == "" {
		p.add("policygen-url", "%q is not an https URL: the token must not travel in clear", s.PolicyGenURL)
	}
	if s.PolicyGenCAConfigMap != "" && !IsDNSSubdomain(s.PolicyGenCAConfigMap) {
		p.add("policygen-ca-configmap", "%q is not a DNS subdomain name", s.PolicyGenCAConfigMap)
	}
	if err := checkPlatformDefaults(s.Platform.PlatformDefaults()); err != nil {
		*p = append(*p, err)
	}
	// The API server refuses projected tokens shorter than 10 minutes.
	if s.TokenExpiration < 10*time.Minute {
		p.add("token-expiration", "%v is under the API server's 10m minimum", s.TokenExpiration)
	}
}

func checkPort(p *problems, key string, port int) {
	if port < 1 || port > 65535 {
		p.add(key, "%d is not a port from 1 to 65535", port)
	}
}
