package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"podwall.io/podwall/api/policy"
)

// PolicyGenServer is policygen's configuration (podwall-policygen). Every field is one key, spelled as its
// `mapstructure` tag; --help lists them with their defaults.
type PolicyGenServer struct {
	// File is the config file that was read (key config); policygen has none by default.
	File string `mapstructure:"config"`
	// API is the policy API the sidecars subscribe to.
	API PolicyAPI `mapstructure:",squash"`
	// TLS says where the policy API's serving certificate comes from. In managed mode its CA bundle
	// is published in the ConfigMap CAConfigMap of Namespace, which the injector hands to sidecars.
	TLS ServingTLS `mapstructure:",squash"`
	// CAConfigMap is the ConfigMap (key ca.crt) where managed mode publishes the CA bundle (key
	// ca-configmap).
	CAConfigMap string `mapstructure:"ca-configmap"`
	// Generate tunes the manifest rules.
	Generate PolicyGenerate `mapstructure:",squash"`
	// Promote sets the quiet periods of mode promotion.
	Promote PolicyPromote `mapstructure:",squash"`
	// Learn tunes the learned rules.
	Learn PolicyLearn `mapstructure:",squash"`
	// NetworkPolicySync keeps a NetworkPolicy per WorkloadPolicy in Protect (key networkpolicy-sync),
	// for the network plugin to enforce beside podwall; it needs the RBAC of
	// manifests/overlays/networkpolicy-sync.
	NetworkPolicySync bool `mapstructure:"networkpolicy-sync"`
	// MetricsAddr serves Prometheus metrics (key metrics-addr); "0" disables it.
	MetricsAddr string `mapstructure:"metrics-addr"`
	// HealthAddr serves /healthz and /readyz (key health-addr).
	HealthAddr string `mapstructure:"health-addr"`
	// LeaderElect elects one replica to write policies (key leader-elect); every replica serves the API.
	LeaderElect bool `mapstructure:"leader-elect"`
	// Namespace is policygen's own namespace, where the leader Lease lives (key namespace).
	Namespace string `mapstructure:"namespace"`
	// Replica names this replica in WorkloadPolicy status (key replica-name, the pod's name).
	Replica string `mapstructure:"replica-name"`
	// KubeQPS and KubeBurst bound policygen's requests to the API server (keys kube-api-qps,
	// kube-api-burst): TokenReviews of reconnecting sidecars and status writes go through them.
	KubeQPS   float32 `mapstructure:"kube-api-qps"`
	KubeBurst int     `mapstructure:"kube-api-burst"`
	// ReplicaStatusTTL is how long a replica's entry in WorkloadPolicy status counts without being
	// refreshed (key replica-status-ttl): a killed replica's sidecars stop counting after it.
	ReplicaStatusTTL time.Duration `mapstructure:"replica-status-ttl"`
}

// PolicyAPI is the policy API's listener and limits.
type PolicyAPI struct {
	// Addr is the TLS listen address (key api-addr).
	Addr string `mapstructure:"api-addr"`
	// Audience is what sidecar tokens must be issued for (key token-audience).
	Audience string `mapstructure:"token-audience"`
	// MaxWait bounds a long-poll (key max-wait).
	MaxWait time.Duration `mapstructure:"max-wait"`
	// MaxReportBytes bounds a report body (key max-report-bytes).
	MaxReportBytes int64 `mapstructure:"max-report-bytes"`
	// ReportInterval and ReportBurst rate-limit reports per pod (keys report-interval, report-burst).
	ReportInterval time.Duration `mapstructure:"report-interval"`
	ReportBurst    int           `mapstructure:"report-burst"`
}

// PolicyGenerate tunes manifest rules.
type PolicyGenerate struct {
	// DNSService is the cluster DNS Service every workload may reach, "namespace/name" (key dns-service).
	DNSService string `mapstructure:"dns-service"`
	// ClusterDomain is the cluster's DNS suffix for Service names in URLs (key cluster-domain).
	ClusterDomain string `mapstructure:"cluster-domain"`
}

// PolicyPromote sets the quiet periods; 0 disables a promotion.
type PolicyPromote struct {
	// LearnQuiet: Learn becomes Monitor after this long with nothing new learned (key learn-quiet-period).
	LearnQuiet time.Duration `mapstructure:"learn-quiet-period"`
	// MonitorQuiet: Monitor becomes Protect, for policies with autoProtect, after this long without an
	// audit (key monitor-quiet-period).
	MonitorQuiet time.Duration `mapstructure:"monitor-quiet-period"`
	// CanaryWindow: a canary rollout (spec.canary) passes after this long without a deny on a canary
	// pod (key canary-window).
	CanaryWindow time.Duration `mapstructure:"canary-window"`
}

// PolicyLearn tunes the learned rules.
type PolicyLearn struct {
	// CollapseNamespace: once a workload's learned rules of one direction name this many workloads of
	// one other namespace on a protocol and port, that port allows the whole namespace instead, one
	// learned rule selecting it (key learn-collapse-namespace); 0 never collapses. The workload's own
	// namespace never collapses.
	CollapseNamespace int `mapstructure:"learn-collapse-namespace"`
}

var policyGenServerLoader = loader{
	name: "podwall-policygen",
	flags: func(f *pflag.FlagSet) {
		f.String("api-addr", ":8443", "policy API TLS listen address")
		servingTLSFlags(f, "/var/run/podwall-policygen/certs", "podwall-policygen", "podwall-policygen-tls")
		f.String("ca-configmap", "podwall-policygen-ca", "with cert-mode=managed: ConfigMap (key ca.crt) in namespace where the CA bundle is published")
		f.String("token-audience", policy.TokenAudience, "audience sidecar tokens must carry")
		f.Duration("max-wait", 2*time.Minute, "longest long-poll a sidecar may ask for")
		f.Int64("max-report-bytes", 2<<20, "largest report body accepted (4096 entries take up to ~1 MiB)")
		f.Duration("report-interval", 5*time.Second, "one report per pod per this interval, on average")
		f.Int("report-burst", 5, "reports a pod may send at once above the rate")
		f.String("dns-service", "kube-system/kube-dns", "cluster DNS Service every workload may reach (namespace/name)")
		f.String("cluster-domain", "cluster.local", "cluster DNS domain")
		f.Duration("learn-quiet-period", 24*time.Hour, "Learn -> Monitor after this long with nothing new learned (0: never)")
		f.Duration("monitor-quiet-period", 7*24*time.Hour, "Monitor -> Protect (autoProtect policies) after this long without audits (0: never)")
		f.Duration("canary-window", time.Hour, "a canary rollout (spec.canary) passes after this long without a deny on a canary pod")
		f.Int("learn-collapse-namespace", 5, "learned callers of one port from this many workloads of one other namespace become a rule for the whole namespace (0: never)")
		f.String("metrics-addr", ":8080", `address serving /metrics ("0": off)`)
		f.String("health-addr", ":8081", "address serving /healthz and /readyz")
		f.Bool("leader-elect", true, "elect one replica to write policies; every replica serves the API")
		f.String("namespace", "podwall-system", "policygen's namespace (leader Lease)")
		f.String("replica-name", "", "this replica's name in WorkloadPolicy status (the pod name)")
		f.Float32("kube-api-qps", 50, "requests per second to the API server, sustained")
		f.Int("kube-api-burst", 100, "requests to the API server at once above kube-api-qps")
		f.Duration("replica-status-ttl", 2*time.Minute, "a replica's sidecar counts in WorkloadPolicy status expire after this long unrefreshed")
		f.Bool("networkpolicy-sync", false, "keep a NetworkPolicy per WorkloadPolicy in Protect, for the network plugin to enforce too (needs RBAC on networkpolicies)")
	},
}

// LoadPolicyGenServer reads policygen's configuration from args (without the program name), the PODWALL_*
// environment and the file named by --config, and validates it.
func LoadPolicyGenServer(args []string) (PolicyGenServer, error) {
	var c PolicyGenServer
	if err := policyGenServerLoader.load(args, &c); err != nil {
		return PolicyGenServer{}, err
	}
	if err := c.validate(); err != nil {
		return PolicyGenServer{}, fmt.Errorf("invalid policygen config: %w", err)
	}
	return c, nil
}

func (c PolicyGenServer) validate() error {
	var p problems
	c.TLS.check(&p)
	if c.TLS.Mode == CertManaged && !IsDNSSubdomain(c.CAConfigMap) {
		p.add("ca-configmap", "%q is not a DNS subdomain name", c.CAConfigMap)
	}
	if c.API.Audience == "" {
		p.add("token-audience", "required")
	}
	if c.API.MaxWait < time.Second || c.API.MaxWait > 10*time.Minute {
		p.add("max-wait", "%v is outside 1s to 10m", c.API.MaxWait)
	}
	if c.API.MaxReportBytes < 1024 {
		p.add("max-report-bytes", "%d is under 1024", c.API.MaxReportBytes)
	}
	if c.API.ReportInterval <= 0 {
		p.add("report-interval", "%v must be positive", c.API.ReportInterval)
	}
	if c.API.ReportBurst < 1 {
		p.add("report-burst", "%d must be at least 1", c.API.ReportBurst)
	}
	if ns, name, ok := strings.Cut(c.Generate.DNSService, "/"); !ok || !IsDNSLabel(ns) || !IsDNSLabel(name) {
		p.add("dns-service", "%q is not namespace/name", c.Generate.DNSService)
	}
	if !IsDNSSubdomain(c.Generate.ClusterDomain) {
		p.add("cluster-domain", "%q is not a DNS name", c.Generate.ClusterDomain)
	}
	if c.Promote.LearnQuiet < 0 || c.Promote.MonitorQuiet < 0 {
		p.add("learn-quiet-period", "quiet periods must not be negative")
	}
	if c.Promote.CanaryWindow <= 0 {
		p.add("canary-window", "%v must be positive", c.Promote.CanaryWindow)
	}
	if c.Learn.CollapseNamespace < 0 {
		p.add("learn-collapse-namespace", "%d is negative: give how many workloads of one namespace make a rule for the namespace, or 0 to never collapse", c.Learn.CollapseNamespace)
	}
	if c.KubeQPS <= 0 || c.KubeBurst < 1 {
		p.add("kube-api-qps", "qps %v and burst %d must be positive", c.KubeQPS, c.KubeBurst)
	}
	if c.ReplicaStatusTTL < 3*time.Second {
		p.add("replica-status-ttl", "%v is under the 3s minimum", c.ReplicaStatusTTL)
	}
	if !IsDNSLabel(c.Namespace) {
		p.add("namespace", "%q is not a DNS label", c.Namespace)
	}
	return errors.Join(p...)
}
