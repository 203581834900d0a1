// Package config is the one package that reads podwall's configuration; nothing else imports viper.
// Each binary gets a Load function that returns a typed struct, validated before anyone uses it, so
// that components take plain values and never look up a key.
//
// # Sources
//
// A setting comes from the first of these that has it:
//
//  1. a flag (--queue-count=4);
//  2. the environment, PODWALL_ and the key upper-cased with dashes as underscores
//     (PODWALL_QUEUE_COUNT=4); an empty variable counts as unset;
//  3. the YAML file named by --config / PODWALL_CONFIG (queue-count: 4); a missing file means no
//     settings from it, because the ConfigMap that provides it is optional;
//  4. the default, which is the flag's default and is shown by --help.
//
// Every binary also takes --version, which prints its version (package internal/version) on stdout
// and makes Load return ErrVersion, as --help makes it return ErrHelp; "version" is no setting (no
// file key, no environment variable).
//
// The sidecar's file is the exception: it is a layer of its own that may only tighten flags,
// environment and defaults (see below).
//
// A key is spelled the same in all three places. Lists are YAML lists in the file and comma-separated
// in flags and the environment. Unknown keys in the file, values a field cannot hold exactly (a port of
// 70000, a count of 1.5, true for a number) and invalid settings are errors that name the key; every
// validation problem is reported at once.
//
// # Sidecar keys and their two layers
//
// The sidecar's configuration has two layers. The platform layer is its flags, its environment and
// the defaults: what the injector sets, from the platform's ConfigMap (podwall-platform in
// podwall-system, key platform.yaml, which package config/platform reads: defaults, per-namespace and
// per-workload entries that a cluster admin writes) over its own flags sidecar-<key>. The workload layer is the file
// (/etc/podwall/config.yaml, where the injector mounts the workload's ConfigMap podwall-config), which
// anyone who may write ConfigMaps in the pod's namespace controls; LoadSidecar reads it apart from
// the platform layer, and it may only tighten: a mode at least as strict as the platform's (Learn <
// Monitor < Protect), at least as many allows logged (none < first < all), an allow interval no
// longer and a log rate and burst no lower than the platform's, and queue-count, which tunes
// throughput only. Any other key in the file, or a looser value, refuses the whole file with an
// error that names each key and says "only the platform sets it: ConfigMap podwall-platform in
// podwall-system (ask your cluster admin)". At start a refused file leaves the platform's settings
// alone in force (they are never looser); on a reload the last good file's stay (FileState says
// which). A mode in either layer is a floor: the sidecar enforces the strictest of the policy's mode
// and the configured one, so mode: Learn under a Protect policy changes nothing.
//
// A platform entry's key resources is not a sidecar key: it sets the podwall container's requests
// and limits (cpu, memory), resource by resource over the injector's sidecar-{cpu,memory}-* flags,
// and the workload layer cannot set it (see package config/platform, which reads the file: it needs
// Kubernetes' API types for the resources, and the sidecar, which links this package, must not).
//
// "live" keys reach a running sidecar through WatchSidecar; a change of queue-count in the file is
// reported as a RestartRequiredError and takes effect at the next start. "layer" says who may set the
// key: platform (flags, environment, and for those marked +file the platform's ConfigMap) or
// workload (the file too, within the limits above).
//
//	key                   default                            live  layer           meaning
//	mode                  "" (the policy's)                  yes   workload+file   Learn, Monitor or Protect: a floor under the policy's mode
//	log-allows            first                              yes   workload+file   first, all or none (denies are always logged)
//	log-allow-interval    1m                                 yes   workload+file   with first: how long a logged allow keeps its key quiet
//	log-rate              100                                yes   workload+file   verdict lines per second, sustained, per verdict
//	log-burst             200                                yes   workload+file   verdict lines of one verdict at once above log-rate
//	queue-count           0 = one per CPU, at most 4         no    workload        NFQUEUE queues, fanned out by the kernel
//	fail-mode             closed                             no    platform+file   closed or open: traffic while no sidecar decides
//	deny-memo-timeout     2s                                 no    platform+file   Protect: a denied key is refused in the kernel this long
//	dns-min-ttl           5s                                 no    platform+file   shortest time an address a DNS answer gave stays allowed (at least 1s)
//	dns-max-ttl           1h                                 no    platform+file   longest time (at least dns-min-ttl): the answer's TTL is clamped to both
//	dns-max-names         4096                               no    platform+file   DNS names held at most; an answer past it teaches nothing
//	dns-max-addrs         16384                              no    platform+file   resolved addresses held at most
//	resolv-conf           /etc/resolv.conf                   no    platform        the pod's resolvers (whose answers are observed) and search domains
//	mesh-outbound-ports   15001,4140 (Envoy, Linkerd)        no    platform        proxy ports receiving redirected outbound connections
//	mesh-inbound-ports    15006,4143 (Envoy, Linkerd)        no    platform        proxy ports receiving redirected inbound connections
//	queue-base            100                                no    platform        first NFQUEUE number (the one after the last takes DNS)
//	verdict-min-workers   1                                  no    platform        goroutines deciding queued connections when idle
//	verdict-max-workers   0 = two per CPU of the limit, ≤ 8  no    platform        goroutines deciding them under load, at most 64 (see below)
//	policy-file           ""                                 no    platform        resolved policy to enforce standalone
//	policy-cache-dir      /var/lib/podwall                   no    platform        last received policy, re-applied at start
//	listen-addr           :9947                              no    platform        /metrics and /readyz
//	pod-name              ""  (downward API metadata.name)   no    platform        PODWALL_POD_NAME
//	pod-namespace         ""  (metadata.namespace)           no    platform        PODWALL_POD_NAMESPACE
//	pod-service-account   ""  (spec.serviceAccountName)      no    platform        PODWALL_POD_SERVICE_ACCOUNT
//	pod-ips               ""  (status.podIPs)                no    platform        PODWALL_POD_IPS, comma-separated
//	workload              ""  (set by the injector)          no    platform        PODWALL_WORKLOAD, "Kind/name"
//	policygen-url         "" (standalone)                    no    platform        policygen's policy API, https
//	policygen-token-file  /var/run/secrets/podwall.io/token  no    platform        projected token, audience podwall
//	policygen-ca          "" (system roots)                  no    platform        PEM CA bundle for policygen (the injector's, as policygen publishes it)
//	app-net-raw           ""  (set by the injector)          no    platform        app containers that keep CAP_NET_RAW, announced at start
//	baseline-only         false                              no    platform        install the starting ruleset, no verdict loop, and exit
//
// In the "workload+file" and "platform+file" rows, "file" is the platform's ConfigMap. Its changes
// apply to pods created after them: kubectl rollout restart the workloads it should reach. A version
// of it that does not parse is logged by the injector and the last good one stays in force; with none
// good since the injector started, the injector refuses pods rather than inject them without the
// platform's floor.
//
// log-rate and log-burst size one token bucket for each verdict — allows, audits, denies and revoked
// connections — rather than one for all: a SYN flood of denied connections cannot silence the allows,
// nor a burst of allows the deny of a new peer. Suppressed lines are counted by verdict in the summary
// line, as before. deny-memo-timeout (at least 100ms) is how long the kernel refuses, unqueued and
// unlogged, a connection key (peer, protocol, port, direction) the sidecar denied; the refusals are
// counted in podwall_deny_memo_hits_total.
//
// The goroutines deciding the connection queues' packets are a pool between verdict-min-workers
// and verdict-max-workers: it grows while packets wait for a worker and shrinks when workers stay
// idle (podwall_verdict_workers, and a line on stderr at each change). verdict-max-workers 0 is two
// per CPU the sidecar may use — its container's CPU limit (cgroup v2 cpu.max of its own cgroup and
// those above it, as /proc/self/cgroup names it), else GOMAXPROCS — at most 8 and never under
// verdict-min-workers; setting it to verdict-min-workers keeps the pool at one size.
//
// Exactly one of policy-file and policygen-url must be set. Port 9947 for listen-addr keeps clear of
// the ports apps and proxies usually take in the pod's shared network namespace (Prometheus 9090,
// Envoy 9901 and 150xx, Linkerd 41xx); it must not be a mesh port.
//
// # Hot reload
//
// WatchSidecar watches the file's directory, not the file: the kubelet updates a ConfigMap volume by
// writing a new timestamped directory, pointing a temporary symlink at it and renaming that over the
// ..data symlink, so the file's own symlink never changes. Each change re-reads the file and layers it
// on the platform's settings, which do not change while the sidecar runs; a refused file is reported
// (FileState) and the last good one stays.
// A ConfigMap mounted with subPath is never updated by the kubelet: mount the whole volume. Outside
// Kubernetes, replace the file by renaming a new one over it; a file rewritten in place may be read
// half-written.
//
// # Adding a binary's configuration
//
// In a new file of this package (injector.go, say):
//
//  1. Declare the struct. Each field carries `mapstructure:"<key>"`; groups of fields are nested
//     structs tagged `mapstructure:",squash"` (keys stay flat). Add File string `mapstructure:"config"`.
//  2. Declare a loader: the binary's name, its default file (or ""), and a function that defines one
//     pflag per key with its default and help. The flags are the registry of keys: a key without a
//     flag has no default and no environment variable.
//  3. Write a validate method that collects problems (problems.add, oneOf) and a LoadX(args) that
//     calls loader.load, fills in machine-dependent defaults, then validates.
//  4. Test like sidecar_test.go: precedence and errors as tables with t.Setenv (writeSources), the
//     keys-are-flags guard, and a Fuzz target over the file. For hot reload, build on filewatch.Watch
//     and changedKeys as WatchSidecar does, and test with kubeletVolume from watch_test.go.
package config
