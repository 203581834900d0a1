package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/version"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// registerMetrics creates the agent's own series; the verdict loop registers its own in Run.
func (a *Agent) registerMetrics() {
	verdicts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_verdicts_total", Help: "Decisions made in user space, by direction and verdict.",
	}, []string{"direction", "verdict"})
	for _, d := range []policy.Direction{policy.Ingress, policy.Egress, policy.Loopback} {
		for _, v := range []policy.Verdict{policy.Allow, policy.Deny, policy.Audit} {
			a.dp.verdicts[d][v] = verdicts.WithLabelValues(d.String(), v.String())
		}
	}
	a.dp.badPkts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_unparsable_packets_total", Help: "Queued packets that could not be parsed and were dropped.",
	})
	a.revision = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podwall_policy_revision", Help: "Revision of the policy in force.",
	})
	a.applyErr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_policy_apply_errors_total", Help: "Policies refused (invalid, or the kernel refused the batch); the previous one stayed in force.",
	})
	a.revoked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_revoked_total", Help: "Established connections cut because the policy in force refuses them.",
	})
	a.tampered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_ruleset_tamper_total", Help: "Changes to the podwall table made by another process, each undone by re-applying the policy in force.",
	})
	a.reg.MustRegister(version.BuildInfo(), verdicts, a.dp.badPkts, a.revision, a.applyErr, a.revoked, a.tampered,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podwall_learned_pending", Help: "Observed connections waiting to be reported.",
		}, func() float64 { return float64(a.dp.reports.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podwall_deny_memo_hits_total", Help: "Connections refused in the kernel because their key was denied moments before (deny-memo-timeout); not logged one by one.",
		}, a.kernelCounter(ruleset.CounterDenyMemoHits)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podwall_learned_dropped_total", Help: "Observed connections evicted unreported (memory bound).",
		}, func() float64 { return float64(a.dp.reports.Dropped()) }),
	)
	for _, c := range []struct {
		name, help string
		get        func(verdictlog.Stats) uint64
	}{
		{"podwall_verdict_lines_total", "Verdict lines written.", func(st verdictlog.Stats) uint64 { return st.Logged }},
		{"podwall_verdict_lines_filtered_total", "Allows not logged by choice (log-allows).", func(st verdictlog.Stats) uint64 { return st.Filtered }},
		{"podwall_verdict_lines_rate_limited_total", "Verdict lines suppressed by the rate limit.", func(st verdictlog.Stats) uint64 { return st.RateLimited }},
		{"podwall_verdict_lines_dropped_total", "Verdict lines dropped because stdout fell behind.", func(st verdictlog.Stats) uint64 { return st.Dropped }},
	} {
		a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.get(a.logStats())) }))
	}
}

// kernelCounter returns what reads one of the ruleset's named counters at scrape time.
func (a *Agent) kernelCounter(name string) func() float64 {
	return func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.nft != nil && !a.stopped {
			if n, err := ruleset.ReadCounter(a.nft, name); err == nil {
				if a.counters == nil {
					a.counters = map[string]uint64{}
				}
				a.counters[name] = n
			} else {
				a.log.V(1).Info("ruleset counter unread", "counter", name, "error", err.Error())
			}
		}
		return float64(a.counters[name])
	}
}

// logStats are the verdict log's counters since the start, across Reconfigure.
func (a *Agent) logStats() verdictlog.Stats {
	a.mu.Lock()
	total := a.retired
	a.mu.Unlock()
	cur := a.vlog.Load().Stats()
	total.Logged += cur.Logged
	total.Filtered += cur.Filtered
	total.RateLimited += cur.RateLimited
	total.Dropped += cur.Dropped
	return total
}

// retireLogger flushes a replaced verdict logger and keeps its counters. Called with a.mu held.
func (a *Agent) retireLogger(old *verdictlog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := old.Close(ctx); err != nil {
		a.log.Error(err, "flush the replaced verdict log")
	}
	st := old.Stats()
	a.retired.Logged += st.Logged
	a.retired.Filtered += st.Filtered
	a.retired.RateLimited += st.RateLimited
	a.retired.Dropped += st.Dropped
}
