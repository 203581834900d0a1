package resolve

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	resolutions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_policygen_resolutions_total",
		Help: "Policies resolved (on first request and after a change to what they depend on).",
	})
	revisions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podwall_policygen_revisions_total",
		Help: "New revisions published: resolutions whose result differed from the one served.",
	})
	resolved = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podwall_policygen_resolved_workloads",
		Help: "Workloads whose resolved policy this replica keeps up to date.",
	})
)

func init() { metrics.Registry.MustRegister(resolutions, revisions, resolved) }
