package nfq

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the verdict loop's Prometheus series.
type Metrics struct {
	// Latency is the time from a packet's arrival at the worker to its verdict being sent.
	Latency prometheus.Histogram
	// VerdictErrors counts verdicts the kernel did not take (the packet is then dropped by the kernel).
	VerdictErrors prometheus.Counter
	// Overruns counts socket buffer overruns: packets the kernel could not hand to us.
	Overruns prometheus.Counter
	// Restarts counts workers the watchdog replaced.
	Restarts prometheus.Counter
}

// NewMetrics creates the series and registers them with reg when it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podwall_decision_seconds",
			Help:    "Time from a queued packet's arrival to its verdict.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 14), // 10µs .. ~80ms
		}),
		VerdictErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_verdict_errors_total", Help: "Verdicts the kernel refused.",
		}),
		Overruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_overruns_total", Help: "Queue socket overruns (packets lost before user space saw them).",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_watchdog_restarts_total", Help: "Verdict workers the watchdog replaced after a stall.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Latency, m.VerdictErrors, m.Overruns, m.Restarts)
	}
	return m
}

func (m *Metrics) observe(d time.Duration, err error) {
	m.Latency.Observe(d.Seconds())
	if err != nil {
		m.VerdictErrors.Inc()
	}
}
