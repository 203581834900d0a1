package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/dnsobs"
	"podwall.io/podwall/sidecar/nflog"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/report"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/tamper"
	"podwall.io/podwall/sidecar/verdictlog"
)

// Agent is a running sidecar.
type Agent struct {
	opts Options
	log  logr.Logger
	nsfd int // the guarded namespace, 0 for the process's own
	nft  *nftables.Conn
	// fqdnNft is a lasting connection (one socket) for AddFQDN, whose small batches a DNS answer waits
	// for: on nft each batch would open a socket in the namespace first, most of its cost.
	fqdnNft *nftables.Conn
	// guard runs every batch on nft and fqdnNft and restores the table after anyone else's (tamper).
	guard *tamper.Guard
	queue ruleset.QueueKind
	dp    datapath
	// resolv is what the pod's resolv.conf says: whose DNS answers are observed (none: not observed)
	// and its search domains. dns handles the DNS queue; nil when DNS is not observed.
	resolv resolvConf
	dns    *dnsObserver
	ready  atomic.Bool
	reg    *prometheus.Registry
	// client talks to policygen; nil in standalone mode.
	client *pgclient.Client

	mu       sync.Mutex // serializes policy and tunable changes, and every use of nft and fqdnNft
	policy   *enforced
	tunables Tunables
	// config is what reportHeader reports as the effective configuration.
	config policy.SidecarConfig
	// weakerNoted is the last (configured, policy) mode pair told to be ignored (noteWeakerMode).
	weakerNoted [2]policy.Mode
	// fqdnWrites carries answers' addresses to writeFQDN.
	fqdnWrites chan []ruleset.FQDNAddr
	// pushed is the expiry last put in the kernel's FQDN sets for each address and names (addFQDN).
	pushed map[fqdnKey]time.Time
	// selfDests are the destinations the sidecar's own sockets connected to (allowSelf): every Apply
	// keeps them open to MarkSelf.
	selfDests []ruleset.Dest
	// stopped is set when the agent leaves the namespace; no policy is applied after it.
	stopped bool
	vlog    atomic.Pointer[verdictlog.Logger]
	// retired sums the counters of verdict loggers replaced by Reconfigure, so metrics never go back.
	retired  verdictlog.Stats
	revision prometheus.Gauge
	applyErr prometheus.Counter
	revoked  prometheus.Counter
	tampered prometheus.Counter
	// tamperedAt is when restore last ran (Unix seconds, 0 for never), for policy.Guard.
	tamperedAt atomic.Int64
	// kernelLogs says whether the kernel can log packets to a netlink group: UDP DNS answers are then
	// read from the log (ruleset.Options.DNSLog) rather than held in the DNS queue, and the
	// connections the allow sets accept are logged from it (ruleset.Options.AllowLog).
	kernelLogs bool
	// counters are the ruleset's named counters as last read (kernelCounter): a scrape while the
	// table is away (after Remove) repeats them rather than going back.
	counters map[string]uint64
}

// Run guards the namespace until ctx ends, then leaves it in the fail mode's state.
func Run(ctx context.Context, opts Options, log logr.Logger) error {
	a, err := New(opts, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New prepares an agent: it opens the namespace's netlink sockets and finds which queue expression the
// kernel offers. Nothing in the namespace changes until Run.
func New(opts Options, log logr.Logger) (*Agent, error) {
	opts.setDefaults()
	if opts.Memory.Floor != 0 {
		debug.SetMemoryLimit(opts.Memory.limit(0))
	}
	a := &Agent{opts: opts, log: log, reg: prometheus.NewRegistry(), tunables: opts.Tunables, config: opts.Config}
	if opts.NetNS != "" {
		fd, err := unix.Open(opts.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNS, err)
		}
		a.nsfd = fd
	}
	nft, err := ruleset.Dial(a.nsfd)
	if err != nil {
		return nil, err
	}
	a.nft = nft
	if a.fqdnNft, err = ruleset.Dial(a.nsfd, nftables.AsLasting()); err != nil {
		return nil, err
	}
	if a.queue, err = ruleset.DetectQueue(nft); err != nil {
		return nil, fmt.Errorf("detect queue support: %w", err)
	}
	a.kernelLogs = ruleset.DetectLog(nft)
	log.Info("queue support detected", "kind", a.queue.String(), "log", a.kernelLogs)
	if a.guard, err = tamper.New(a.nsfd); err != nil {
		return nil, err
	}
	vlog, err := verdictlog.New(opts.Stdout, a.identity(), opts.Log)
	if err != nil {
		return nil, fmt.Errorf("verdict log: %w", err)
	}
	a.vlog.Store(vlog)
	names, err := dnsobs.NewCache(dnsobs.CacheOptions{MinTTL: opts.DNS.MinTTL, MaxTTL: opts.DNS.MaxTTL,
		MaxNames: opts.DNS.MaxNames, MaxAddrs: opts.DNS.MaxAddrs})
	if err != nil {
		return nil, err
	}
	a.dp = datapath{
		log:     func(c decide.Conn, d decide.Decision) { a.vlog.Load().Log(c, d) },
		lost:    func(n uint64) { a.vlog.Load().Lost(policy.Allow, n) },
		reports: report.New(opts.ReportLimit),
		names:   names,
	}
	a.registerMetrics()
	a.observeDNS()
	if pg := opts.PolicyGen; pg.URL != "" {
		c, err := pgclient.New(pgclient.Options{URL: pg.URL, TokenFile: pg.TokenFile, CA: pg.CA,
			Mark: ruleset.MarkSelf, BeforeConnect: a.allowSelf, ReportInterval: pg.ReportInterval,
			Registerer: a.reg, Guard: a.guarding}, log.WithName("policygen"))
		if err != nil {
			return nil, err
		}
		a.client = c
	}
	return a, nil
}

// Run installs the first policy (the policy file's, else the cached one, else the fail mode's
// baseline), binds the queues, turns ready (with policygen and no cache, once its first policy is in
// force or FirstPolicyWait has passed), and then follows policy and configuration changes until ctx
// ends. Its first verdict-log lines are the app-net-raw notice when app containers hold CAP_NET_RAW and the
// config-refused notice when the workload's config file was refused (Options.Config). It then leaves the
// namespace in the fail mode's state: fail-closed keeps the policy enforced in
// the kernel and refuses the rest, fail-open removes the table.
func (a *Agent) Run(ctx context.Context) error {
	if len(a.opts.AppNetRaw) > 0 {
		a.vlog.Load().Notice(verdict.NoticeAppNetRaw, appNetRawMessage, a.opts.AppNetRaw)
	}
	if c := a.opts.Config; c.File == policy.ConfigRefused {
		a.vlog.Load().Notice(verdict.NoticeConfigRefused, c.Message, nil)
	}
	resumeGC := a.pauseGC()
	defer resumeGC()
	first, fileHash, cache := a.initialPolicy()
	// Bind before the ruleset exists so that its queue rules never meet an unbound queue; the decider
	// must therefore exist first.
	if err := a.swapDecider(first, a.tunables); err != nil {
		return fmt.Errorf("initial policy: %w", err)
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	answers, err := a.readAnswers()
	if err != nil {
		return err
	}
	if answers != nil {
		defer answers.Close()
		go a.runLog(answers, "DNS answers are no longer read: rules by name allow no new address")
	}
	if a.kernelLogs {
		accepted, err := a.readAccepted()
		if err != nil {
			return err
		}
		defer accepted.Close()
		go a.runLog(accepted, "the connections the kernel accepts are no longer read: their verdict lines are lost")
	}
	metrics := nfq.NewMetrics(a.reg)
	loop, err := nfq.Bind(nfq.Options{NetNS: a.nsfd, QueueNum: a.opts.QueueNum,
		QueueCount: a.opts.QueueCount, FailOpen: a.opts.FailOpen, StallTimeout: a.opts.StallTimeout,
		MinWorkers: a.opts.MinWorkers, MaxWorkers: a.opts.MaxWorkers, Metrics: metrics, Registerer: a.reg}, a.dp.handle, a.log)
	if err != nil {
		return err
	}
	go loop.Run(loopCtx)
	if a.dns != nil {
		dnsLoop, err := nfq.Bind(nfq.Options{NetNS: a.nsfd, QueueNum: a.dnsQueue(), FailOpen: a.opts.FailOpen,
			StallTimeout: a.opts.StallTimeout, CopyLen: dnsCopyLen, Metrics: metrics}, a.dns.handle, a.log.WithName("dns"))
		if err != nil {
			return err
		}
		go dnsLoop.Run(loopCtx)
		go a.sweep(loopCtx)
		go a.writeFQDN(loopCtx)
	}
	// Hold the HTTP port before the ruleset opens it to ingress: an app that bound it first would
	// receive what the policy does not allow.
	l, err := net.Listen("tcp", a.opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.opts.HTTPAddr, err)
	}
	if err := a.applyCompiled(first, cache); err != nil {
		l.Close()
		return fmt.Errorf("initial policy: %w", err)
	}
	// What starting took and dropped (the configuration's, the first policy's reading) goes back to
	// the kernel now, before the pod's apps start, rather than as the runtime gets round to it. Later
	// policies are left to the runtime: a forced collection stalls the verdict loop.
	resumeGC()
	debug.FreeOSMemory()
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	go serveHTTP(httpCtx, l, &a.ready, a.reg, a.log)
	guardCtx, stopGuard := context.WithCancel(ctx)
	defer stopGuard()
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		a.guard.Watch(guardCtx, ruleset.TableName, tamper.Options{Restore: a.restore, Log: a.log.WithName("tamper")})
	}()
	var fileWatch <-chan struct{}
	if a.opts.PolicyFile != "" {
		if fileWatch, err = a.watchPolicyFile(ctx, fileHash); err != nil {
			return err
		}
	}
	if a.client != nil {
		received := make(chan struct{})
		held := pgclient.Held{}
		if first.Revision > 0 { // from policygen, cached (a baseline has revision 0)
			held = pgclient.Held{Revision: first.Revision, Hash: first.hash}
		}
		go a.client.Follow(ctx, held, firstTime(received, a.applyDocument))
		go a.client.ReportLoop(ctx, a.dp.reports, a.reportHeader)
		if first.Revision == 0 {
			a.awaitFirstPolicy(ctx, received)
		}
	}
	a.ready.Store(true)
	a.log.Info("ready", "revision", a.Revision(), "mode", string(a.mode()))
	<-ctx.Done()
	if fileWatch != nil {
		<-fileWatch // the watcher applies nothing more, nor logs after Run returns
	}
	<-guarded // no restore after the namespace is left in its final state
	a.ready.Store(false)
	err = a.leave()
	a.guard.Close()
	a.fqdnNft.CloseLasting()
	stopLoop()
	if cerr := a.vlog.Load().Close(context.Background()); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// appNetRawMessage is the notice for app containers holding CAP_NET_RAW.
const appNetRawMessage = "these app containers hold CAP_NET_RAW: they can set SO_MARK and open raw and packet sockets whose traffic this sidecar does not judge"

// awaitFirstPolicy holds readiness back, for at most PolicyGen.FirstPolicyWait, until policygen's first
// policy is in force: a new pod's app containers, which start once the sidecar is ready, then meet
// their policy rather than the deny-all baseline. Past the wait the baseline stays in force (fail safe)
// and the sidecar turns ready anyway, so that a policygen outage does not hold every new pod back.
func (a *Agent) awaitFirstPolicy(ctx context.Context, received <-chan struct{}) {
	t := time.NewTimer(a.opts.PolicyGen.FirstPolicyWait)
	defer t.Stop()
	select {
	case <-received:
	case <-ctx.Done():
	case <-t.C:
		a.log.Info("no policy from policygen yet; ready under the baseline", "waited", a.opts.PolicyGen.FirstPolicyWait.String())
	}
}

// firstTime wraps apply so that the first policy it applies closes received.
func firstTime(received chan struct{}, apply func(io.Reader) (*policy.Policy, error)) func(io.Reader) (*policy.Policy, error) {
	var once sync.Once
	return func(r io.Reader) (*policy.Policy, error) {
		p, err := apply(r)
		if err == nil {
			once.Do(func() { close(received) })
		}
		return p, err
	}
}

// leave puts the namespace in the fail mode's state as the sidecar stops.
func (a *Agent) leave() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true // a policy arriving late must not put the queue rules back
	if a.opts.FailOpen {
		a.log.Info("fail-open: removing the ruleset")
		return ruleset.Remove(a.nft)
	}
	a.log.Info("fail-closed: leaving the policy enforced in the kernel", "revision", a.policy.Revision)
	o := a.rulesetOptions(a.tunables)
	o.Offline = true
	// The sidecar's own sockets go with it: an app could bind its port, or forge its mark.
	o.SelfPorts, o.SelfDests = nil, nil
	_, err := a.applyRuleset(a.policy, a.tunables, o)
	return err
}

func (a *Agent) mode() policy.Mode {
	a.mu.Lock()
	defer a.mu.Unlock()
	return modeOf(a.policy.Policy, a.tunables.Mode)
}

// guarding is how the sidecar guards its pod beside its mode, told to policygen with each request.
func (a *Agent) guarding() policy.Guard {
	g := policy.Guard{FailOpen: a.opts.FailOpen}
	if at := a.tamperedAt.Load(); at != 0 {
		g.Tampered = time.Unix(at, 0)
	}
	return g
}

// reportHeader is who reports, under which revision and mode.
func (a *Agent) reportHeader() policy.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.config
	id := a.identity()
	return policy.Report{Namespace: id.Namespace, Workload: id.Workload, Pod: a.opts.Pod,
		Revision: a.policy.Revision, Mode: modeOf(a.policy.Policy, a.tunables.Mode), Config: &c}
}

// ReportConfig takes a new effective configuration to report (it goes out with the next report, which
// is sent for it even with no observations); a newly refused config file is also told in a notice line.
func (a *Agent) ReportConfig(c policy.SidecarConfig) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.File == policy.ConfigRefused && c != a.config {
		a.vlog.Load().Notice(verdict.NoticeConfigRefused, c.Message, nil)
	}
	a.config = c
}

// acceptedBatch is how many copies of accepted connections the kernel gathers, for at most 10 ms,
// before it hands them on (nflog.Options.Batch): their verdict lines need not be written at once, and
// one wake-up of the reader for many connections costs the pod's CPU less.
const acceptedBatch = 32

// readAccepted binds the netlink log group the ruleset copies the connections the allow sets accept
// to (ruleset.Options.AllowLog): the datapath logs and records them from it. It must run before the
// ruleset exists, so that no connection is logged to a group nobody reads.
func (a *Agent) readAccepted() (*nflog.Log, error) {
	return a.openLog("accepted connections", nflog.Options{Group: a.opts.QueueNum, CopyLen: nfq.HeadersLen, Batch: acceptedBatch},
		a.dp.accepted, "podwall_allow_log_overruns_total",
		"Times the socket the sidecar reads the connections the kernel accepted from overflowed: allowed connections not logged (counted in the verdict log's next summary line).")
}

// openLog binds a netlink log group of the namespace for fn, and registers the counter of its
// socket's overruns as metric.
func (a *Agent) openLog(what string, o nflog.Options, fn nflog.Handler, metric, help string) (*nflog.Log, error) {
	o.NetNS = a.nsfd
	l, err := nflog.Open(o, fn)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: metric, Help: help},
		func() float64 { return float64(l.Overruns()) }))
	return l, nil
}

// runLog reads l until it is closed; lost says, should reading fail, what is lost.
func (a *Agent) runLog(l *nflog.Log, lost string) {
	if err := l.Run(); err != nil {
		a.log.Error(err, lost)
	}
}

// identity names the pod in verdict lines and reports. Its workload is the one policygen named in the
// policy in force, once there is one: policygen verifies the pod's owners, while the injector's name
// (opts.Workload) is read from ownerReferences as the pod's creator wrote them, so a pod that claims a
// workload it does not belong to reports and logs as the bare pod policygen serves it as.
func (a *Agent) identity() verdictlog.Identity {
	id := verdictlog.Identity{Pod: a.opts.Pod, Namespace: a.opts.Namespace, Workload: a.opts.Workload}
	if a.policy != nil && a.policy.Workload != "" {
		id.Namespace, id.Workload = a.policy.Namespace, a.policy.Workload
	}
	return id
}

func (a *Agent) selfPorts() []uint16 {
	_, port, err := net.SplitHostPort(a.opts.HTTPAddr)
	if err != nil {
		return nil
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil || p == 0 {
		return nil
	}
	return []uint16{p}
}
