package policyapi

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_policygen_api_requests_total",
		Help: "Policy API responses by endpoint (policy, report) and HTTP status code.",
	}, []string{"endpoint", "code"})
	subscribers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podwall_policygen_subscribers",
		Help: "Sidecars currently long-polling this replica.",
	})
)

func init() {
	metrics.Registry.MustRegister(requests, subscribers)
}
