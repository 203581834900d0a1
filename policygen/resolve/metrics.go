package resolve

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Hub's series.
type metrics struct {
	resolutions, revisions prometheus.Counter
	resolved               prometheus.Gauge
}

// newMetrics creates a hub's series and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		resolutions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_policygen_resolutions_total",
			Help: "Policies resolved (on first request and after a change to what they depend on).",
		}),
		revisions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_policygen_revisions_total",
			Help: "New revisions published: resolutions whose result differed from the one served.",
		}),
		resolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podwall_policygen_resolved_workloads",
			Help: "Workloads whose resolved policy this replica keeps up to date.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.resolutions, m.revisions, m.resolved)
	}
	return m
}
