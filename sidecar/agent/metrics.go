package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/verdictlog"
)

// registerMetrics creates the sidecar's own series; the verdict loop registers its own in Run.
func (s *Sidecar) registerMetrics() {
	verdicts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_verdicts_total", Help: "Decisions made in user space, by direction and verdict.",
	}, []string{"direction", "verdict"})
	for _, d := range []policy.Direction{policy.Ingress, policy.Egress, policy.Loopback} {
		for _, v := range []policy.Verdict{policy.Allow, policy.Deny, policy.Audit} {
			s.dp.verdicts[d][v] = verdicts.WithLabelValues(d.String(), v.String())
		}
	}
	s.dp.badPkts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_unparsable_packets_total", Help: "Queued packets that could not be parsed and were dropped.",
	})
	s.revision = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podwall_policy_revision", Help: "Revision of the policy in force.",
	})
	s.applyErr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_policy_apply_errors_total", Help: "Policies refused (invalid, or the kernel refused the batch); the previous one stayed in force.",
	})
	s.reg.MustRegister(verdicts, s.dp.badPkts, s.revision, s.applyErr,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podwall_learned_pending", Help: "Observed connections waiting to be reported.",
		}, func() float64 { return float64(s.dp.learned.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podwall_learned_dropped_total", Help: "Observed connections evicted unreported (memory bound).",
		}, func() float64 { return float64(s.dp.learned.Dropped()) }),
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
		s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.get(s.logStats())) }))
	}
}

// logStats are the verdict log's counters since the start, across Reconfigure.
func (s *Sidecar) logStats() verdictlog.Stats {
	s.mu.Lock()
	total := s.retired
	s.mu.Unlock()
	cur := s.vlog.Load().Stats()
	total.Logged += cur.Logged
	total.Filtered += cur.Filtered
	total.RateLimited += cur.RateLimited
	total.Dropped += cur.Dropped
	return total
}

// retireLogger flushes a replaced verdict logger and keeps its counters. Called with s.mu held.
func (s *Sidecar) retireLogger(old *verdictlog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := old.Close(ctx); err != nil {
		s.log.Error(err, "flush the replaced verdict log")
	}
	st := old.Stats()
	s.retired.Logged += st.Logged
	s.retired.Filtered += st.Filtered
	s.retired.RateLimited += st.RateLimited
	s.retired.Dropped += st.Dropped
}
