// Package sidecar is the contract between the injector and the sidecar container: the binary the
// injector runs, the settings it passes (environment variables and flags, each named by a
// configuration key), the container and volume names it reserves and the paths it mounts. The
// injector builds the container from these names and the sidecar's configuration (package config)
// declares its keys and defaults with them, so the two cannot drift apart unnoticed.
//
// It holds names only and imports nothing of podwall's.
package sidecar

import "strings"

// Binary is the sidecar image's entry point.
const Binary = "/podwall-sidecar"

// The containers the injector adds; a pod's own container of either name is replaced.
const (
	// ContainerName is the sidecar: a native sidecar (first init container) or, on clusters without
	// native sidecars, the first ordinary container.
	ContainerName = "podwall"
	// InitContainerName runs Binary with BaselineOnly, on clusters without native sidecars, so that
	// the deny-all baseline is in place before any other container starts.
	InitContainerName = "podwall-init"
)

// Key is a setting of the sidecar's configuration. The sidecar reads it from the flag Flag, the
// environment variable Env or its config file, under the same name; these are the keys the injector
// sets.
type Key string

// The keys the injector sets.
const (
	// KeyConfig names the config file; the injector points it at ConfigFile.
	KeyConfig Key = "config"
	// KeyPodName, KeyPodNamespace, KeyPodServiceAccount and KeyPodIPs carry the pod's identity from
	// the downward API; KeyWorkload its workload, "Kind/name", which the injector works out.
	KeyPodName           Key = "pod-name"
	KeyPodNamespace      Key = "pod-namespace"
	KeyPodServiceAccount Key = "pod-service-account"
	KeyPodIPs            Key = "pod-ips"
	KeyWorkload          Key = "workload"
	// KeyListenAddr serves the sidecar's probes and metrics on the port the injector's probes use.
	KeyListenAddr Key = "listen-addr"
	// KeyPolicyCacheDir keeps the last policy received; the injector points it at CacheDir.
	KeyPolicyCacheDir Key = "policy-cache-dir"
	// KeyPolicyGenURL, KeyPolicyGenTokenFile and KeyPolicyGenCA say how to reach policygen; the
	// last is the CA bundle itself (PEM), which the injector reads where policygen publishes it.
	KeyPolicyGenURL       Key = "policygen-url"
	KeyPolicyGenTokenFile Key = "policygen-token-file"
	KeyPolicyGenCA        Key = "policygen-ca"
	// KeyMeshOutboundPorts and KeyMeshInboundPorts name a detected mesh proxy's redirect ports.
	KeyMeshOutboundPorts Key = "mesh-outbound-ports"
	KeyMeshInboundPorts  Key = "mesh-inbound-ports"
	// KeyAppNetRaw names the pod's app containers that keep CAP_NET_RAW (comma-separated), which the
	// injector otherwise drops: the sidecar announces that they can bypass it.
	KeyAppNetRaw Key = "app-net-raw"
	// KeyBaselineOnly installs the starting ruleset and exits: the init container's one argument.
	KeyBaselineOnly Key = "baseline-only"
)

// Env is the key's environment variable: PODWALL_ and the key upper-cased, dashes as underscores
// (pod-name is PODWALL_POD_NAME).
func (k Key) Env() string {
	return "PODWALL_" + strings.ToUpper(strings.ReplaceAll(string(k), "-", "_"))
}

// Flag is the key's command-line flag, --<key>.
func (k Key) Flag() string { return "--" + string(k) }

// DefaultPort serves the sidecar's /readyz, /healthz and /metrics unless configured otherwise. 9947
// keeps clear of the ports apps and proxies usually take in the pod's shared network namespace.
const DefaultPort = 9947

// PortName names the sidecar container's port of /readyz, /healthz and /metrics (DefaultPort unless
// configured otherwise), so that what must reach it, a NetworkPolicy's rule included, finds it by name.
const PortName = "podwall-http"

// The volumes the injector adds and where the sidecar finds them. The paths are the sidecar's own
// defaults too; the injector sets them explicitly all the same.
const (
	// VolumeConfig is the per-workload ConfigMap, mounted whole at ConfigDir: the kubelet updates only
	// whole volumes, and the sidecar reloads ConfigFile when it changes.
	VolumeConfig = "podwall-config"
	ConfigDir    = "/etc/podwall"
	ConfigFile   = ConfigDir + "/config.yaml"
	// VolumeToken projects the service-account token for policygen (TokenFileName) into TokenDir.
	VolumeToken   = "podwall-token"
	TokenDir      = "/var/run/secrets/podwall.io"
	TokenFileName = "token"
	TokenFile     = TokenDir + "/" + TokenFileName
	// VolumeCache keeps the last policy received across restarts of the container.
	VolumeCache = "podwall-cache"
	CacheDir    = "/var/lib/podwall"
)

// The platform's ConfigMap, in the injector's namespace (podwall-system), which only a cluster admin
// writes: the sidecar settings of every pod, of a namespace's and of one workload's, under the key
// PlatformFile. The injector passes a pod's settings as environment variables, which the pod's own
// config file (VolumeConfig) may only tighten.
const (
	PlatformConfigMap = "podwall-platform"
	PlatformFile      = "platform.yaml"
)
