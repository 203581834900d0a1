package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/revoke"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// Apply makes p the enforced policy: the decider and the ruleset change together, the ruleset in one
// netlink batch (a large policy's allow sets staged before it: ruleset.Compiled.Apply). If either
// refuses p, the previous policy stays in force and the error says why. In Protect, the established
// connections p refuses are then cut (revoke).
func (a *Agent) Apply(p *policy.Policy) error {
	e, err := a.compile(p)
	if err != nil {
		a.applyErr.Inc()
		return err
	}
	cache := a.newCache()
	if cache != nil {
		json.NewEncoder(cache).Encode(p) // a write error is commit's to report
	}
	return a.applyCompiled(e, cache)
}

// applyDocument reads a policy document from r, as policygen serves it (JSON), straight into its
// decider and ruleset (and the cache), applies it as Apply does, and returns it without its rules.
func (a *Agent) applyDocument(r io.Reader) (*policy.Policy, error) {
	cache := a.newCache()
	e, err := a.readDocument(r, nil, newCopies(cache))
	if err != nil {
		a.applyErr.Inc()
		cache.discard()
		return nil, err
	}
	return e.Policy, a.applyCompiled(e, cache)
}

// applyCompiled applies e as Apply does, then sets the memory limit for it.
func (a *Agent) applyCompiled(e *enforced, cache *pendingCache) error {
	a.mu.Lock()
	err := a.applyLocked(e, a.tunables, cache)
	a.mu.Unlock()
	a.settleMemory()
	return err
}

// applyLocked makes e the enforced policy under tunables t, and then commits cache, the document e
// was read from (nil: none to write); a.mu is held.
func (a *Agent) applyLocked(e *enforced, t Tunables, cache *pendingCache) error {
	if a.stopped {
		cache.discard()
		return errors.New("sidecar stopping: policy not applied")
	}
	old := a.dp.decider.Load()
	// The decider changes first: a connection queued under the old ruleset but decided by the new
	// policy is judged by the stricter of the two moments, and an allow under the old policy can no
	// longer slip into the new ruleset's seen sets after the swap.
	if err := a.swapDecider(e, t); err != nil {
		a.applyErr.Inc()
		cache.discard()
		return err
	}
	if err := a.guard.WriteBatches(func() (int, error) { return a.applyRuleset(e, t, a.rulesetOptions(t)) }); err != nil {
		a.dp.decider.Store(old)
		a.applyErr.Inc()
		cache.discard()
		return fmt.Errorf("apply ruleset: %w", err)
	}
	before := a.identity()
	a.policy, a.tunables = e, t
	if id := a.identity(); id != before {
		a.relabel(id)
	}
	a.revision.Set(float64(e.Revision))
	a.noteWeakerMode(e.Policy, t.Mode)
	if modeOf(e.Policy, t.Mode) == policy.Protect {
		a.revoke()
	}
	if err := cache.commit(); err != nil {
		a.log.Error(err, "policy cache not updated; a restart would re-apply an older policy")
	}
	return nil
}

// applyRuleset makes the kernel enforce e under the mode floor of t, with options o, and returns the
// batches committed.
func (a *Agent) applyRuleset(e *enforced, t Tunables, o ruleset.Options) (int, error) {
	return e.rules.WithMode(modeOf(e.Policy, t.Mode)).Apply(a.nft, o)
}

// revoke cuts the established connections that the decider now in force refuses, each with a revoked
// line: conntrack would otherwise carry them on under the new policy. Learn and Monitor never cut. A
// failure leaves the policy in force and is logged; the connections it could not cut run on.
func (a *Agent) revoke() {
	n, err := revoke.Revoke(a.nsfd, a.dp.decider.Load(), revoke.Options{SelfPorts: a.selfPorts(),
		Own: ruleset.SelfConn, Log: a.dp.log, Names: func(ip netip.Addr) []string { return a.dp.names.Names(ip, time.Now()) }})
	a.revoked.Add(float64(n))
	if err != nil {
		a.log.Error(err, "established connections the policy refuses may run on")
	}
}

// swapDecider puts e's decider in force, in the mode t's floor gives it.
func (a *Agent) swapDecider(e *enforced, t Tunables) error {
	opts := a.decideOptions()
	opts.Mode = modeOf(e.Policy, t.Mode)
	d, err := e.decider.With(opts)
	if err != nil {
		return err
	}
	a.dp.decider.Store(d)
	return nil
}

// Revision is the revision of the policy in force.
func (a *Agent) Revision() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.policy.Revision
}

func (a *Agent) rulesetOptions(t Tunables) ruleset.Options {
	o := ruleset.Options{
		Queue: a.queue, QueueNum: a.opts.QueueNum, QueueCount: a.opts.QueueCount, FailOpen: a.opts.FailOpen,
		SeenTimeout: t.Log.FirstInterval, DenyMemoTimeout: a.opts.DenyMemo, SelfPorts: a.selfPorts(), SelfDests: a.selfDests,
		DNSQueue: a.dnsQueue(), DNSServers: a.resolv.Servers, DNSLog: a.kernelLogs, AllowLog: a.kernelLogs,
	}
	for _, l := range a.dp.names.Live(time.Now()) {
		o.FQDN = append(o.FQDN, ruleset.FQDNAddr(l))
	}
	o.LogAllows = logAllows(t)
	return o
}

// logAllows is the ruleset's LogAllows for t's log-allows.
func logAllows(t Tunables) ruleset.LogAllows {
	switch t.Log.Allows {
	case verdictlog.AllowsAll:
		return ruleset.LogAllowsAll
	case verdictlog.AllowsNone:
		return ruleset.LogAllowsNone
	}
	return ruleset.LogAllowsFirst
}

// noteWeakerMode says, once for each pair, that the configured mode is weaker than the policy's and
// changes nothing. a.mu is held.
func (a *Agent) noteWeakerMode(p *policy.Policy, configured policy.Mode) {
	pair := [2]policy.Mode{configured, p.Mode}
	if configured == "" || !configured.Weaker(p.Mode) || pair == a.weakerNoted {
		return
	}
	a.weakerNoted = pair
	a.log.Info("the configured mode is weaker than the policy's and is ignored: a mode in the configuration is a floor",
		"configured", string(configured), "policy", string(p.Mode))
}

// allowSelf opens the ruleset to MarkSelf towards one destination the sidecar's own socket is about
// to connect to (pgclient.Options.BeforeConnect): policygen, or a DNS server for its lookup. The
// kernel has the destination before the socket's first packet leaves; an app that forges MarkSelf
// reaches these destinations and no other.
func (a *Agent) allowSelf(network, address string) error {
	d, err := selfDest(network, address)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return errors.New("sidecar stopping: no new connection")
	}
	if slices.Contains(a.selfDests, d) {
		return nil
	}
	if err := a.guard.Write(func() error { return ruleset.AddSelfDest(a.nft, d) }); err != nil {
		return err
	}
	a.selfDests = append(a.selfDests, d)
	return nil
}

// selfDest reads a dialer's resolved network ("tcp4", "udp6") and address.
func selfDest(network, address string) (ruleset.Dest, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return ruleset.Dest{}, fmt.Errorf("own connection to %q: %w", address, err)
	}
	switch {
	case strings.HasPrefix(network, "tcp"):
		return ruleset.Dest{Proto: policy.TCP, Addr: ap}, nil
	case strings.HasPrefix(network, "udp"):
		return ruleset.Dest{Proto: policy.UDP, Addr: ap}, nil
	}
	return ruleset.Dest{}, fmt.Errorf("own connection over %q: want tcp or udp", network)
}
