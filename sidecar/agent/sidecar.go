package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/report"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// New prepares a sidecar: it opens the namespace's netlink sockets and finds which queue expression the
// kernel offers. Nothing in the namespace changes until Run.
func New(opts Options, log logr.Logger) (*Sidecar, error) {
	opts.setDefaults()
	s := &Sidecar{opts: opts, log: log, reg: prometheus.NewRegistry(), tunables: opts.Tunables}
	if opts.NetNS != "" {
		fd, err := unix.Open(opts.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNS, err)
		}
		s.nsfd = fd
	}
	nft, err := ruleset.Dial(s.nsfd)
	if err != nil {
		return nil, err
	}
	s.nft = nft
	if s.queue, err = ruleset.DetectQueue(nft); err != nil {
		return nil, fmt.Errorf("detect queue support: %w", err)
	}
	log.Info("queue support detected", "kind", s.queue.String())
	vlog, err := verdictlog.New(opts.Stdout, s.identity(), opts.Log)
	if err != nil {
		return nil, fmt.Errorf("verdict log: %w", err)
	}
	s.vlog.Store(vlog)
	s.dp = datapath{
		log:     func(c decide.Conn, d decide.Decision) { s.vlog.Load().Log(c, d) },
		learned: report.New(opts.LearnedLimit),
	}
	s.registerMetrics()
	if pg := opts.PolicyGen; pg.URL != "" {
		c, err := pgclient.New(pgclient.Options{URL: pg.URL, TokenFile: pg.TokenFile, CAFile: pg.CAFile,
			Mark: ruleset.MarkSelf, ReportInterval: pg.ReportInterval, Registerer: s.reg}, log.WithName("policygen"))
		if err != nil {
			return nil, err
		}
		s.client = c
	}
	return s, nil
}

// Run installs the first policy (the policy file's, else the cached one, else the fail mode's
// baseline), binds the queues, turns ready (with policygen and no cache, once its first policy is in
// force or FirstPolicyWait has passed), and then follows policy and configuration changes until ctx
// ends. It then leaves the namespace in the fail mode's state: fail-closed keeps the policy enforced in
// the kernel and refuses the rest, fail-open removes the table.
func (s *Sidecar) Run(ctx context.Context) error {
	first, fileData := s.initialPolicy()
	// Bind before the ruleset exists so that its queue rules never meet an unbound queue; the decider
	// must therefore exist first.
	if err := s.swapDecider(first, s.tunables); err != nil {
		return fmt.Errorf("initial policy: %w", err)
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	loop, err := nfq.Bind(loopCtx, nfq.Options{NetNS: s.nsfd, QueueNum: s.opts.QueueNum,
		QueueCount: s.opts.QueueCount, FailOpen: s.opts.FailOpen, StallTimeout: s.opts.StallTimeout,
		Metrics: nfq.NewMetrics(s.reg), Registerer: s.reg}, s.dp.handle, s.log)
	if err != nil {
		return err
	}
	go loop.Run(loopCtx)
	if err := s.Apply(first); err != nil {
		return fmt.Errorf("initial policy: %w", err)
	}
	l, err := net.Listen("tcp", s.opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.opts.HTTPAddr, err)
	}
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	go serveHTTP(httpCtx, l, &s.ready, s.reg, s.log)
	if s.opts.PolicyFile != "" {
		go s.watchPolicyFile(ctx, fileData)
	}
	if s.client != nil {
		received := make(chan struct{})
		go s.client.Subscribe(ctx, first, firstTime(received, s.Apply))
		go s.client.ReportLoop(ctx, s.dp.learned, s.reportHeader)
		if first.Revision == 0 {
			s.awaitFirstPolicy(ctx, received)
		}
	}
	s.ready.Store(true)
	s.log.Info("ready", "revision", s.Revision(), "mode", string(s.mode()))
	<-ctx.Done()
	s.ready.Store(false)
	err = s.leave()
	stopLoop()
	if cerr := s.vlog.Load().Close(context.Background()); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// InstallBaseline applies the ruleset a starting sidecar begins with (the policy file's or the cached
// policy, else the fail mode's baseline) in its offline form, with no queue rules, and returns: what
// the injector's init container does on clusters without native sidecars, so that the pod's other
// containers start guarded before the sidecar container is up.
func (s *Sidecar) InstallBaseline() error {
	p, _ := s.initialPolicy()
	o := s.rulesetOptions(s.tunables)
	o.Offline = true
	if err := ruleset.Apply(s.nft, withMode(p, s.tunables.Mode), o); err != nil {
		return fmt.Errorf("install baseline: %w", err)
	}
	s.log.Info("baseline installed", "revision", p.Revision)
	return nil
}

// awaitFirstPolicy holds readiness back, for at most PolicyGen.FirstPolicyWait, until policygen's first
// policy is in force: a new pod's app containers, which start once the sidecar is ready, then meet
// their policy rather than the deny-all baseline. Past the wait the baseline stays in force (fail safe)
// and the sidecar turns ready anyway, so that a policygen outage does not hold every new pod back.
func (s *Sidecar) awaitFirstPolicy(ctx context.Context, received <-chan struct{}) {
	t := time.NewTimer(s.opts.PolicyGen.FirstPolicyWait)
	defer t.Stop()
	select {
	case <-received:
	case <-ctx.Done():
	case <-t.C:
		s.log.Info("no policy from policygen yet; ready under the baseline", "waited", s.opts.PolicyGen.FirstPolicyWait.String())
	}
}

// firstTime wraps apply so that the first policy it applies closes received.
func firstTime(received chan struct{}, apply func(*policy.Policy) error) func(*policy.Policy) error {
	var once sync.Once
	return func(p *policy.Policy) error {
		err := apply(p)
		if err == nil {
			once.Do(func() { close(received) })
		}
		return err
	}
}

func (s *Sidecar) mode() policy.Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return modeOf(s.policy, s.tunables.Mode)
}

// leave puts the namespace in the fail mode's state as the sidecar stops.
func (s *Sidecar) leave() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true // a policy arriving late must not put the queue rules back
	if s.opts.FailOpen {
		s.log.Info("fail-open: removing the ruleset")
		return ruleset.Remove(s.nft)
	}
	s.log.Info("fail-closed: leaving the policy enforced in the kernel", "revision", s.policy.Revision)
	o := s.rulesetOptions(s.tunables)
	o.Offline = true
	return ruleset.Apply(s.nft, withMode(s.policy, s.tunables.Mode), o)
}

// Apply makes p the enforced policy: the decider and the ruleset change together, the ruleset in one
// netlink batch. If either refuses p, the previous policy stays in force and the error says why.
func (s *Sidecar) Apply(p *policy.Policy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(p, s.tunables)
}

func (s *Sidecar) applyLocked(p *policy.Policy, t Tunables) error {
	if s.stopped {
		return errors.New("sidecar stopping: policy not applied")
	}
	old := s.dp.decider.Load()
	// The decider changes first: a connection queued under the old ruleset but decided by the new
	// policy is judged by the stricter of the two moments, and an allow under the old policy can no
	// longer slip into the new ruleset's seen sets after the swap.
	if err := s.swapDecider(p, t); err != nil {
		s.applyErr.Inc()
		return err
	}
	if err := ruleset.Apply(s.nft, withMode(p, t.Mode), s.rulesetOptions(t)); err != nil {
		s.dp.decider.Store(old)
		s.applyErr.Inc()
		return fmt.Errorf("apply ruleset: %w", err)
	}
	s.policy, s.tunables = p, t
	s.revision.Set(float64(p.Revision))
	if p != baseline(s.opts.FailOpen, t.Mode) && s.opts.CacheDir != "" {
		if err := saveCache(s.opts.CacheDir, p); err != nil {
			s.log.Error(err, "policy cache not updated; a restart would re-apply an older policy")
		}
	}
	return nil
}

func (s *Sidecar) swapDecider(p *policy.Policy, t Tunables) error {
	d, err := decide.New(p, decide.Options{Mode: t.Mode, MeshPorts: slices.Concat(s.opts.MeshOutPorts, s.opts.MeshInPorts)})
	if err != nil {
		return err
	}
	s.dp.decider.Store(d)
	return nil
}

// Revision is the revision of the policy in force.
func (s *Sidecar) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy.Revision
}

// Reconfigure takes new tunables: a new verdict log, and the ruleset again if the mode or the seen
// interval changed. Invalid tunables leave the old ones in force.
func (s *Sidecar) Reconfigure(t Tunables) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if logChanged(t.Log, s.tunables.Log) {
		vlog, err := verdictlog.New(s.opts.Stdout, s.identity(), t.Log)
		if err != nil {
			return fmt.Errorf("verdict log: %w", err)
		}
		old := s.vlog.Swap(vlog)
		s.retireLogger(old)
	}
	if t.Mode != s.tunables.Mode || t.Log.FirstInterval != s.tunables.Log.FirstInterval || t.Log.Allows != s.tunables.Log.Allows {
		if err := s.applyLocked(s.policy, t); err != nil {
			return err
		}
	}
	s.tunables = t
	return nil
}

func logChanged(a, b verdictlog.Options) bool {
	return a.Allows != b.Allows || a.FirstInterval != b.FirstInterval || a.Rate != b.Rate ||
		a.Burst != b.Burst || a.BufferBytes != b.BufferBytes
}

// initialPolicy picks what to enforce before anything else is known: the policy file in standalone
// mode (it is the operator's word), else the cached policy, else the fail mode's baseline. It returns
// the file content it applied, so that the file watcher knows what is already in force.
func (s *Sidecar) initialPolicy() (*policy.Policy, []byte) {
	if s.opts.PolicyFile != "" {
		data, err := os.ReadFile(s.opts.PolicyFile)
		if err == nil {
			var p *policy.Policy
			if p, err = policy.Decode(data); err == nil {
				return p, data
			}
		}
		s.log.Error(err, "policy file unusable; trying the cache, then the fail mode's baseline", "file", s.opts.PolicyFile)
	}
	if p, err := loadCache(s.opts.CacheDir); err != nil {
		s.log.Error(err, "ignoring the policy cache")
	} else if p != nil {
		s.log.Info("re-applying the cached policy", "revision", p.Revision)
		return p, nil
	}
	return baseline(s.opts.FailOpen, s.tunables.Mode), nil
}

var (
	denyAll  = &policy.Policy{Mode: policy.Protect}
	auditAll = &policy.Policy{Mode: policy.Monitor}
)

// baseline is what a pod that has never had a policy runs: deny-all in Protect or when failing closed,
// else allow-all with every connection logged as an audit.
func baseline(failOpen bool, override policy.Mode) *policy.Policy {
	if failOpen && override != policy.Protect {
		return auditAll
	}
	return denyAll
}

func (s *Sidecar) rulesetOptions(t Tunables) ruleset.Options {
	o := ruleset.Options{
		Queue: s.queue, QueueNum: s.opts.QueueNum, QueueCount: s.opts.QueueCount, FailOpen: s.opts.FailOpen,
		SeenTimeout: t.Log.FirstInterval, SelfPorts: s.selfPorts(),
	}
	switch t.Log.Allows {
	case verdictlog.AllowsAll:
		o.LogAllows = ruleset.LogAllowsAll
	case verdictlog.AllowsNone:
		o.LogAllows = ruleset.LogAllowsNone
	default:
		o.LogAllows = ruleset.LogAllowsFirst
	}
	return o
}

// withMode returns p as the kernel should enforce it under a mode override.
func withMode(p *policy.Policy, override policy.Mode) *policy.Policy {
	if override == "" || override == p.Mode {
		return p
	}
	c := *p
	c.Mode = override
	return &c
}

// reportHeader is who reports, under which revision and mode.
func (s *Sidecar) reportHeader() policy.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return policy.Report{Namespace: s.opts.Namespace, Workload: s.opts.Workload, Pod: s.opts.Pod,
		Revision: s.policy.Revision, Mode: modeOf(s.policy, s.tunables.Mode)}
}

func (s *Sidecar) identity() verdictlog.Identity {
	return verdictlog.Identity{Pod: s.opts.Pod, Namespace: s.opts.Namespace, Workload: s.opts.Workload}
}

func (s *Sidecar) selfPorts() []uint16 {
	_, port, err := net.SplitHostPort(s.opts.HTTPAddr)
	if err != nil {
		return nil
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil || p == 0 {
		return nil
	}
	return []uint16{p}
}
