package main

import (
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"podwall.io/podwall/cmd/internal/serving"
	"podwall.io/podwall/config"
	"podwall.io/podwall/policygen"
)

// options translates the loaded configuration into policygen's options.
func options(c config.PolicyGenServer) policygen.Options {
	dnsNS, dnsName, _ := strings.Cut(c.Generate.DNSService, "/") // validated as namespace/name
	return policygen.Options{
		APIAddr:          c.API.Addr,
		TLS:              serving.Options(c.TLS, c.Namespace),
		CAConfigMap:      c.CAConfigMap,
		Audience:         c.API.Audience,
		MaxWait:          c.API.MaxWait,
		MaxReportBytes:   c.API.MaxReportBytes,
		ReportInterval:   c.API.ReportInterval,
		ReportBurst:      c.API.ReportBurst,
		DNS:              types.NamespacedName{Namespace: dnsNS, Name: dnsName},
		ClusterDomain:    c.Generate.ClusterDomain,
		LearnQuiet:       c.Promote.LearnQuiet,
		MonitorQuiet:     c.Promote.MonitorQuiet,
		CanaryWindow:     c.Promote.CanaryWindow,
		MetricsAddr:      c.MetricsAddr,
		HealthAddr:       c.HealthAddr,
		LeaderElect:      c.LeaderElect,
		Namespace:        c.Namespace,
		Replica:          c.Replica,
		KubeQPS:          c.KubeQPS,
		KubeBurst:        c.KubeBurst,
		ReplicaStatusTTL: c.ReplicaStatusTTL,

		CollapseNamespace: c.Learn.CollapseNamespace,
		NetworkPolicySync: c.NetworkPolicySync,
	}
}
