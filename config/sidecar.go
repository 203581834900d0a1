package config

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/sidecar"
)

// DefaultSidecarFile is where the injector mounts the per-workload ConfigMap's config.yaml.
const DefaultSidecarFile = sidecar.ConfigFile

// maxAutoQueues caps queue-count 0 (one queue per CPU): past a few queues, a sidecar that shares the
// pod's CPU limit gains little and each queue costs a netlink socket and its buffer.
const maxAutoQueues = 4

// Sidecar is the sidecar's configuration. Every field is one key; the table in the package
// documentation lists the keys, their defaults and whether a running sidecar reloads them.
type Sidecar struct {
	// File is the config file that was read (key config), the file WatchSidecar watches.
	File string `mapstructure:"config"`
	// Live holds the settings a running sidecar applies without a restart.
	Live SidecarLive `mapstructure:",squash"`
	// Mesh names the local ports of a service-mesh proxy that the pod's traffic is redirected to.
	Mesh MeshPorts `mapstructure:",squash"`
	// Queue is the range of NFQUEUE numbers the sidecar binds, one worker each.
	Queue Queues `mapstructure:",squash"`
	// Workers bounds the goroutines that decide the packets of the connection queues.
	Workers VerdictWorkers `mapstructure:",squash"`
	// FailMode says what happens to traffic when the sidecar is not there to decide (key fail-mode).
	FailMode FailMode `mapstructure:"fail-mode"`
	// DNS tunes the observation of the pod's DNS answers, which FQDN rules are enforced through.
	DNS DNS `mapstructure:",squash"`
	// DenyMemoTimeout is how long, in Protect, the kernel refuses a connection key the sidecar denied
	// without asking it again (key deny-memo-timeout): the deny is logged once, and a flood of it
	// leaves the queue to new keys.
	DenyMemoTimeout time.Duration `mapstructure:"deny-memo-timeout"`
	// PolicyFile is a resolved policy file to enforce without policygen (key policy-file, standalone
	// mode). Exactly one of PolicyFile and PolicyGen.URL is set.
	PolicyFile string `mapstructure:"policy-file"`
	// CacheDir keeps the last policy received so that a restart re-applies it before the first packet
	// (key policy-cache-dir); empty disables the cache.
	CacheDir string `mapstructure:"policy-cache-dir"`
	// ListenAddr serves /metrics (Prometheus) and /readyz (ready once the ruleset is in place) on one
	// port (key listen-addr).
	ListenAddr string `mapstructure:"listen-addr"`
	// Pod is who the sidecar runs for, as the downward API tells it.
	Pod Pod `mapstructure:",squash"`
	// PolicyGen is where the sidecar subscribes to its policy.
	PolicyGen PolicyGen `mapstructure:",squash"`
	// AppNetRaw names the pod's app containers that keep CAP_NET_RAW (key app-net-raw), which the
	// injector sets when it does not drop it: they can set SO_MARK and open raw and packet sockets that
	// bypass the firewall, and the sidecar says so at start.
	AppNetRaw []string `mapstructure:"app-net-raw"`
	// BaselineOnly installs the ruleset the sidecar starts from (the cached policy, else the fail
	// mode's baseline) with no verdict loop, and exits (key baseline-only): the injector's init
	// container on clusters without native sidecars, so that no app container starts unguarded.
	BaselineOnly bool `mapstructure:"baseline-only"`
	// Platform holds the live settings of the platform layer alone (flags, environment, defaults):
	// the floor that the workload's file (File) may only tighten. It is no key.
	Platform SidecarLive `mapstructure:"-"`
	// FileState is what became of the workload's file. It is no key.
	FileState FileState `mapstructure:"-"`
}

// SidecarLive holds the settings that WatchSidecar delivers to a running sidecar.
type SidecarLive struct {
	// Mode is a floor under the policy's mode (key mode): the strictest of the two is enforced;
	// empty uses the policy's.
	Mode policy.Mode `mapstructure:"mode"`
	// Log tunes the verdict log.
	Log VerdictLog `mapstructure:",squash"`
}

// VerdictLog tunes the verdict lines on stdout. Denies are always logged; the rate limit covers every
// line, each verdict its own budget, and the sidecar counts what it suppressed.
type VerdictLog struct {
	// Allows says which allows are logged (key log-allows).
	Allows AllowLog `mapstructure:"log-allows"`
	// AllowInterval is how long an allow logged under LogFirstAllow keeps the same connection key
	// (direction, peer, port, rule) quiet (key log-allow-interval).
	AllowInterval time.Duration `mapstructure:"log-allow-interval"`
	// Rate is the sustained verdict lines per second (key log-rate), Burst how many may come at once
	// (key log-burst): a token bucket for each verdict (allow, audit, deny, revoked), so that a flood
	// of one does not use up the budget of the others.
	Rate  float64 `mapstructure:"log-rate"`
	Burst int     `mapstructure:"log-burst"`
}

// AllowLog says which allow verdicts are logged.
type AllowLog string

// The allow logging choices.
const (
	// LogFirstAllow logs the first allow of each connection key per AllowInterval.
	LogFirstAllow AllowLog = "first"
	// LogAllAllows logs every allow.
	LogAllAllows AllowLog = "all"
	// LogNoAllows logs no allow; denies and audits are still logged.
	LogNoAllows AllowLog = "none"
)

// MeshPorts are a mesh proxy's local redirect targets. The defaults cover Envoy (Istio) and Linkerd;
// a port on neither list is an ordinary local port.
type MeshPorts struct {
	// Outbound ports receive the app's redirected outgoing connections (key mesh-outbound-ports;
	// Envoy 15001, Linkerd 4140): the sidecar decides them against the original destination.
	Outbound []uint16 `mapstructure:"mesh-outbound-ports"`
	// Inbound ports receive redirected incoming connections (key mesh-inbound-ports; Envoy 15006,
	// Linkerd 4143): the sidecar decides them against the original source.
	Inbound []uint16 `mapstructure:"mesh-inbound-ports"`
}

// Queues is the range Base .. Base+Count-1 of NFQUEUE numbers for connections, and Base+Count for the
// pod's DNS packets. Queue numbers belong to the network namespace, so the pod's own namespace is all
// they must be unique in.
type Queues struct {
	// Base is the first queue number (key queue-base). 100 keeps clear of 0, which other netfilter
	// tools default to.
	Base uint16 `mapstructure:"queue-base"`
	// Count is how many queues the kernel fans new connections out over (key queue-count); 0 when
	// loading means one per CPU the sidecar may use (GOMAXPROCS, which follows the container's CPU
	// limit), at most 4. A loaded config always has Count ≥ 1.
	Count uint16 `mapstructure:"queue-count"`
}

// VerdictWorkers bounds the pool of goroutines that decide the packets of the connection queues: it
// grows while packets wait for a worker and shrinks when workers stay idle.
type VerdictWorkers struct {
	// Min is how many workers the pool keeps when idle (key verdict-min-workers).
	Min int `mapstructure:"verdict-min-workers"`
	// Max is how many it grows to under load (key verdict-max-workers); 0 when loading means two per
	// CPU the sidecar may use (its cgroup's CPU limit, else GOMAXPROCS), at most 8 and at least Min.
	// A loaded config always has 1 ≤ Min ≤ Max; Max = Min keeps the pool at one size.
	Max int `mapstructure:"verdict-max-workers"`
}

// DNS tunes how the sidecar follows the pod's DNS answers: the addresses of a name an FQDN rule
// allows are allowed for as long as the answer's TTL, clamped to [MinTTL, MaxTTL], and the names and
// addresses held are capped so that a pod resolving without end cannot grow the sidecar without end.
type DNS struct {
	// ResolvConf is the pod's resolver configuration (key resolv-conf): its nameservers are the
	// resolvers whose answers are observed, its search domains names a RestrictDNS policy still lets
	// the pod ask for. A missing or unreadable file means DNS is not observed, and FQDN rules allow
	// nothing.
	ResolvConf string `mapstructure:"resolv-conf"`
	// MinTTL is the shortest time an answer's address stays allowed (key dns-min-ttl): long enough
	// for the app to connect after a TTL-0 answer.
	MinTTL time.Duration `mapstructure:"dns-min-ttl"`
	// MaxTTL is the longest (key dns-max-ttl): a long TTL does not keep an address allowed for days.
	MaxTTL time.Duration `mapstructure:"dns-max-ttl"`
	// MaxNames and MaxAddrs cap the names and the addresses held (keys dns-max-names and
	// dns-max-addrs); an answer past a cap teaches nothing and the sidecar says so.
	MaxNames int `mapstructure:"dns-max-names"`
	MaxAddrs int `mapstructure:"dns-max-addrs"`
}

// FailMode says what the pod's traffic meets while no sidecar decides it.
type FailMode string

// The fail modes.
const (
	// FailClosed refuses new connections while the sidecar is gone and leaves the deny rules in place
	// when it exits.
	FailClosed FailMode = "closed"
	// FailOpen lets new connections through while the sidecar is gone (the queue's bypass flag) and
	// removes its table when it exits.
	FailOpen FailMode = "open"
)

// Pod identifies the pod. The injector fills these from the downward API, as PODWALL_POD_NAME
// (metadata.name), PODWALL_POD_NAMESPACE (metadata.namespace), PODWALL_POD_IPS (status.podIPs),
// PODWALL_POD_SERVICE_ACCOUNT (spec.serviceAccountName) and PODWALL_WORKLOAD (a literal the injector
// works out from the owner references). All are optional: they label verdict lines.
type Pod struct {
	Name           string `mapstructure:"pod-name"`
	Namespace      string `mapstructure:"pod-namespace"`
	ServiceAccount string `mapstructure:"pod-service-account"`
	// IPs are the pod's addresses, one per family.
	IPs []netip.Addr `mapstructure:"pod-ips"`
	// Workload is the pod's top owner as "Kind/name" ("Deployment/web"), as in policy.Policy.
	Workload string `mapstructure:"workload"`
}

// PolicyGen says how to reach policygen's policy API.
type PolicyGen struct {
	// URL is the policy API's https URL (key policygen-url); empty means standalone (PolicyFile).
	URL string `mapstructure:"policygen-url"`
	// TokenFile is the projected service-account token (audience podwall) the sidecar presents (key
	// policygen-token-file). It is re-read for every connection because the kubelet rotates it.
	TokenFile string `mapstructure:"policygen-token-file"`
	// CA is the PEM bundle that verifies policygen's certificate (key policygen-ca); empty uses the
	// system roots. The injector sets it from the bundle policygen publishes.
	CA string `mapstructure:"policygen-ca"`
}

// sidecarLoader declares the sidecar's keys; the flag defaults are the defaults. The keys the injector
// sets, and the paths it mounts, are named by api/sidecar, which the injector builds the container from.
var sidecarLoader = loader{
	name:        "podwall-sidecar",
	defaultFile: DefaultSidecarFile,
	layered:     true,
	flags: func(f *pflag.FlagSet) {
		f.String("mode", "", "a floor under the policy's mode: Learn, Monitor or Protect; the strictest of the two is enforced (empty: the policy's)")
		f.String("log-allows", string(LogFirstAllow), "which allows to log: first, all or none")
		f.Duration("log-allow-interval", time.Minute, "with log-allows=first, how long a logged allow keeps its connection key quiet")
		f.Float64("log-rate", 100, "verdict lines per second, sustained, for each verdict (allow, audit, deny, revoked)")
		f.Int("log-burst", 200, "verdict lines of one verdict at once above log-rate")
		f.IntSlice(string(sidecar.KeyMeshOutboundPorts), []int{15001, 4140}, "mesh proxy ports receiving redirected outbound connections")
		f.IntSlice(string(sidecar.KeyMeshInboundPorts), []int{15006, 4143}, "mesh proxy ports receiving redirected inbound connections")
		f.Uint16("queue-base", 100, "first NFQUEUE number")
		f.Uint16("queue-count", 0, "number of NFQUEUE queues (0: one per CPU, at most 4)")
		f.Int("verdict-min-workers", 1, "goroutines deciding queued connections when idle")
		f.Int("verdict-max-workers", 0, "goroutines deciding queued connections under load (0: two per CPU of the container's limit, at most 8)")
		f.String("fail-mode", string(FailClosed), "traffic while the sidecar is not deciding: closed or open")
		f.Duration("deny-memo-timeout", 2*time.Second, "in Protect, how long the kernel refuses a denied connection key without asking again")
		f.String("resolv-conf", "/etc/resolv.conf", "the pod's resolver configuration: whose DNS answers are observed, and its search domains")
		f.Duration("dns-min-ttl", 5*time.Second, "shortest time a resolved address stays allowed by an FQDN rule")
		f.Duration("dns-max-ttl", time.Hour, "longest time a resolved address stays allowed by an FQDN rule")
		f.Int("dns-max-names", 4096, "DNS names held at most")
		f.Int("dns-max-addrs", 16384, "resolved addresses held at most")
		f.String("policy-file", "", "resolved policy file to enforce without policygen (standalone)")
		f.String(string(sidecar.KeyPolicyCacheDir), sidecar.CacheDir, "where the last received policy is kept (empty: no cache)")
		f.String(string(sidecar.KeyListenAddr), ":"+strconv.Itoa(sidecar.DefaultPort), "address serving /metrics and /readyz")
		f.String(string(sidecar.KeyPodName), "", "this pod's name")
		f.String(string(sidecar.KeyPodNamespace), "", "this pod's namespace")
		f.String(string(sidecar.KeyPodServiceAccount), "", "this pod's service account")
		f.StringSlice(string(sidecar.KeyPodIPs), nil, "this pod's IP addresses")
		f.String(string(sidecar.KeyWorkload), "", `this pod's workload, "Kind/name"`)
		f.String(string(sidecar.KeyPolicyGenURL), "", "policygen's policy API (https); empty: standalone")
		f.String(string(sidecar.KeyPolicyGenTokenFile), sidecar.TokenFile, "service-account token for policygen")
		f.String(string(sidecar.KeyPolicyGenCA), "", "PEM CA bundle verifying policygen's certificate (empty: system roots)")
		f.StringSlice(string(sidecar.KeyAppNetRaw), nil, "the pod's app containers that keep CAP_NET_RAW (set by the injector)")
		f.Bool(string(sidecar.KeyBaselineOnly), false, "install the starting ruleset (cached policy or baseline) without a verdict loop, then exit")
	},
}

// LoadSidecar reads the sidecar's configuration in two layers and validates it. The platform layer is
// args (without the program name), the PODWALL_* environment and the defaults: what the injector set.
// An invalid platform layer is an error that names each offending key. The workload layer is the
// config file, which may only tighten the platform's live settings and tune queue-count
// (applyWorkloadFile); a file it refuses is no error of the load: the configuration returned is then
// the platform layer alone (which is never looser) and FileState says why.
func LoadSidecar(args []string) (Sidecar, error) {
	platform, err := loadPlatform(args)
	if err != nil {
		return Sidecar{}, err
	}
	data, err := readConfigFile(platform.File)
	if err == nil {
		var s Sidecar
		if s, err = applyWorkloadFile(platform, platform.File, data); err == nil {
			return s, nil
		}
	}
	platform.FileState = FileState{State: policy.ConfigRefused, Refused: err.Error()}
	return platform, nil
}

// loadPlatform reads and validates the platform layer: flags, environment and defaults.
func loadPlatform(args []string) (Sidecar, error) {
	var s Sidecar
	if err := sidecarLoader.load(args, &s); err != nil {
		return Sidecar{}, err
	}
	s.resolve()
	if err := s.validate(); err != nil {
		return Sidecar{}, fmt.Errorf("invalid sidecar config: %w", err)
	}
	s.Platform = s.Live
	s.FileState = FileState{State: policy.ConfigNone}
	return s, nil
}

// resolve fills in the values that depend on the machine and accepts the mode in any letter case.
func (s *Sidecar) resolve() {
	for _, m := range []policy.Mode{policy.Learn, policy.Monitor, policy.Protect} {
		if strings.EqualFold(string(s.Live.Mode), string(m)) {
			s.Live.Mode = m
		}
	}
	if s.Queue.Count == 0 {
		s.Queue.Count = uint16(min(runtime.GOMAXPROCS(0), maxAutoQueues))
	}
	if s.Workers.Max == 0 {
		s.Workers.Max = max(autoMaxWorkers(sidecarCPUs()), s.Workers.Min)
	}
}
