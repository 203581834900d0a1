// Package policygen is the cluster service of podwall: it keeps a WorkloadPolicy per workload of the
// opted-in namespaces (generated from the manifest, learned from the sidecars' reports, promoted
// through the modes) and serves each sidecar its own workload's resolved policy.
//
// It runs as two or more replicas. Whatever writes policies from cluster state (the generator, the
// promoter) runs on the elected leader; every replica resolves policies from its own informer cache,
// serves the policy API and takes reports, so losing a replica loses no sidecar's policy.
package policygen

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"podwall.io/podwall/config"
	"podwall.io/podwall/policygen/generator"
	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/learn"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/scheme"
	"podwall.io/podwall/policygen/ui"
)

var skipNameValidation = true

// Run runs policygen against the cluster restCfg points to until ctx ends.
func Run(ctx context.Context, cfg config.PolicyGenServer, restCfg *rest.Config, log logr.Logger) error {
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = cfg.KubeQPS, cfg.KubeBurst
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        scheme.New(),
		Logger:                        log,
		Metrics:                       metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress:        cfg.HealthAddr,
		LeaderElection:                cfg.LeaderElect,
		LeaderElectionID:              "podwall-policygen",
		LeaderElectionNamespace:       cfg.Namespace,
		LeaderElectionReleaseOnCancel: true,
		// managedFields are most of a cached object and nothing here reads them.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		// Run may run more than once in one process (tests do); the controllers' names then repeat,
		// which only means their metrics are shared.
		Controller: ctrlconfig.Controller{SkipNameValidation: &skipNameValidation},
	})
	if err != nil {
		return fmt.Errorf("new manager: %w", err)
	}
	if err := setup(ctx, mgr, cfg, restCfg, log); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("cache not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("ready check: %w", err)
	}
	log.Info("starting policygen", "replica", cfg.Replica, "api", cfg.API.Addr, "leaderElection", cfg.LeaderElect)
	return mgr.Start(ctx)
}

// setup registers every part with the manager.
func setup(ctx context.Context, mgr ctrl.Manager, cfg config.PolicyGenServer, restCfg *rest.Config, log logr.Logger) error {
	if err := resolve.Index(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	hub := resolve.NewHub(mgr.GetCache(), log.WithName("resolve"), 0)
	if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
		return err
	}
	dnsNS, dnsName, _ := strings.Cut(cfg.Generate.DNSService, "/")
	gen := generator.New(mgr.GetClient(), generator.Options{
		DNS: types.NamespacedName{Namespace: dnsNS, Name: dnsName}, ClusterDomain: cfg.Generate.ClusterDomain,
	})
	if err := gen.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	prom := learn.NewPromoter(mgr.GetClient(), learn.PromoteOptions{
		LearnQuiet: cfg.Promote.LearnQuiet, MonitorQuiet: cfg.Promote.MonitorQuiet, Stale: cfg.ReplicaStatusTTL,
	})
	if err := prom.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("promoter: %w", err)
	}
	learner := learn.NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), learn.LearnerOptions{}, log.WithName("learn"))
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	reviewer, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		return err
	}
	feed := ui.NewFeed(mgr.GetCache(), 0)
	web := ui.New(ui.Options{}, mgr.GetCache(), mgr.GetClient(), reviewer, feed, log.WithName("ui"))
	srv := policyapi.New(policyapi.Options{
		Addr: cfg.API.Addr, CertFile: cfg.API.CertFile, KeyFile: cfg.API.KeyFile, Audience: cfg.API.Audience,
		MaxWait: cfg.API.MaxWait, MaxReportBytes: cfg.API.MaxReportBytes,
		ReportInterval: cfg.API.ReportInterval, ReportBurst: cfg.API.ReportBurst, Replica: cfg.Replica,
		StatusTTL: cfg.ReplicaStatusTTL, UI: web.Handler(),
	}, hub, reviewer, mgr.GetCache(), mgr.GetClient(), feed.Sink(learner), log.WithName("api"))
	// These run on every replica (they say so with NeedLeaderElection).
	for _, r := range []manager.Runnable{hub, learner, srv} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("add runnable: %w", err)
		}
	}
	return nil
}
