package agent

import (
	"io"
	"os"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/verdictlog"
)

// Options configure the agent. Zero values take the documented defaults.
type Options struct {
	// NetNS is the path of the network namespace to guard; empty means the one the process runs in
	// (the pod's). Tests and the local demo set it.
	NetNS string
	// Pod, Namespace and Workload identify the pod in verdict lines.
	Pod, Namespace, Workload string
	// PolicyFile is a policy to enforce and watch for changes (standalone mode); empty means none.
	PolicyFile string
	// PolicyGen subscribes to policygen when its URL is set (the cluster mode).
	PolicyGen PolicyGen
	// CacheDir keeps the last applied policy across restarts; empty disables the cache.
	CacheDir string
	// FailOpen removes the ruleset when the sidecar stops and lets packets pass while no verdict loop
	// is bound; the default, fail-closed, leaves the policy enforced in the kernel and refuses the rest.
	FailOpen bool
	// QueueNum and QueueCount choose the NFQUEUE queues (defaults 100 and 2).
	QueueNum, QueueCount uint16
	// MinWorkers and MaxWorkers bound the goroutines deciding the connection queues' packets, a pool
	// that grows under load and shrinks when idle (defaults 1, and MinWorkers: one size).
	MinWorkers, MaxWorkers int
	// DenyMemo is how long, in Protect, the kernel refuses a connection key the verdict loop denied
	// without queueing it again (default ruleset.DefaultDenyMemoTimeout).
	DenyMemo time.Duration
	// MeshOutPorts and MeshInPorts are the mesh proxy's outbound and inbound redirect targets
	// (defaults: Envoy 15001/15006, Linkerd 4140/4143).
	MeshOutPorts, MeshInPorts []uint16
	// HTTPAddr serves /readyz, /healthz and /metrics (default ":9947").
	HTTPAddr string
	// Stdout receives the verdict lines (default os.Stdout).
	Stdout io.Writer
	// StallTimeout is the watchdog's limit for one verdict (default 2s).
	StallTimeout time.Duration
	// ReportLimit bounds the observed connections held for reporting (default 10000).
	ReportLimit int
	// AppNetRaw names the pod's app containers that hold CAP_NET_RAW (the injector drops it unless
	// told otherwise); Run says so in a notice line as it starts, since they can bypass the firewall.
	AppNetRaw []string
	// DNS says how the pod's DNS answers are followed, for the rules by name (FQDN rules).
	DNS DNS
	// Memory keeps the Go runtime's soft memory limit in step with the policy and sets the
	// collector's target (see MemoryLimit); the zero value leaves both alone.
	Memory MemoryLimit
	// Config is the effective configuration the sidecar reports to policygen with its observations
	// (ReportConfig changes it); a refused workload config file is also told in a notice line.
	Config policy.SidecarConfig
	// Tunables may change while the sidecar runs (Reconfigure).
	Tunables
}

// PolicyGen says how to reach policygen's policy API.
type PolicyGen struct {
	// URL is the API's https URL; empty means standalone (PolicyFile).
	URL string
	// TokenFile is the projected service-account token (audience podwall), re-read for each request.
	TokenFile string
	// CA is the PEM bundle that verifies policygen's certificate; empty uses the system roots.
	CA []byte
	// ReportInterval is how often observations are reported (default 10s).
	ReportInterval time.Duration
	// FirstPolicyWait is how long a sidecar with no policy at all (no cache) waits for policygen's
	// first one before it turns ready under the baseline (default 10s).
	FirstPolicyWait time.Duration
}

// DNS says whose DNS answers the sidecar observes and how long, and how much, it holds what they tell.
type DNS struct {
	// ResolvConf is the pod's resolv.conf (default /etc/resolv.conf): the answers of its nameservers
	// are observed, and its search domains are names a RestrictDNS policy lets the pod ask for. A
	// missing or unreadable file means DNS is not observed (Run says so): rules by name then allow
	// nothing.
	ResolvConf string
	// MinTTL and MaxTTL clamp an answer's TTL: how long its addresses stay allowed (defaults 5s, 1h).
	MinTTL, MaxTTL time.Duration
	// MaxNames and MaxAddrs cap the names and the addresses held (defaults 4096, 16384).
	MaxNames, MaxAddrs int
}

// Tunables are the settings a running sidecar takes without a restart.
type Tunables struct {
	// Mode is a floor when set: the mode enforced is the strictest of it and the policy's.
	Mode policy.Mode
	// Log chooses which allows are logged and the log rate limit. Its FirstInterval is also how long
	// the kernel lets repeat connections of a logged allow through without asking (the seen sets).
	Log verdictlog.Options
}

func (o *Options) setDefaults() {
	if o.QueueNum == 0 {
		o.QueueNum = 100
	}
	if o.QueueCount == 0 {
		o.QueueCount = 2
	}
	if o.MeshOutPorts == nil {
		o.MeshOutPorts = []uint16{15001, 4140}
	}
	if o.MeshInPorts == nil {
		o.MeshInPorts = []uint16{15006, 4143}
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = ":9947"
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 2 * time.Second
	}
	if o.PolicyGen.FirstPolicyWait == 0 {
		o.PolicyGen.FirstPolicyWait = 10 * time.Second
	}
	if o.ReportLimit == 0 {
		o.ReportLimit = 10000
	}
	if o.DNS.ResolvConf == "" {
		o.DNS.ResolvConf = "/etc/resolv.conf"
	}
	if o.DNS.MinTTL == 0 {
		o.DNS.MinTTL = 5 * time.Second
	}
	if o.DNS.MaxTTL == 0 {
		o.DNS.MaxTTL = time.Hour
	}
	if o.DNS.MaxNames == 0 {
		o.DNS.MaxNames = 4096
	}
	if o.DNS.MaxAddrs == 0 {
		o.DNS.MaxAddrs = 16384
	}
	if o.Log.FirstInterval == 0 {
		o.Log.FirstInterval = time.Minute
	}
}
