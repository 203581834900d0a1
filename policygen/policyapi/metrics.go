package policyapi

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Server's series.
type metrics struct {
	requests    *prometheus.CounterVec
	subscribers prometheus.Gauge
}

// newMetrics creates a server's series and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podwall_policygen_api_requests_total",
			Help: "Policy API responses by endpoint (policy, report) and HTTP status code.",
		}, []string{"endpoint", "code"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podwall_policygen_subscribers",
			Help: "Sidecars currently long-polling this replica.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.subscribers)
	}
	return m
}
