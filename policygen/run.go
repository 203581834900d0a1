// Package policygen is the cluster service of podwall: it keeps a WorkloadPolicy per workload of the
// opted-in namespaces (generated from the manifest, learned from the sidecars' reports, promoted
// through the modes) and serves each sidecar its own workload's resolved policy.
//
// It runs as two or more replicas. Whatever writes policies from cluster state (the generator, the
// promoter) runs on the elected leader; every replica resolves policies from its own informer cache,
// serves the policy API and takes reports, so losing a replica loses no sidecar's policy.
package policygen

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/version"
	"podwall.io/podwall/policygen/generator"
	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/learn"
	"podwall.io/podwall/policygen/netpolsync"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/scheme"
	"podwall.io/podwall/policygen/ui"
)

// Options configure Run; zero values take the defaults in parentheses.
type Options struct {
	// APIAddr is the policy API's TLS listen address (":8443").
	APIAddr string
	// TLS says where the policy API's certificate comes from (certs.Serving.SetDefaults for
	// "podwall-policygen" in Namespace). A managed certificate's CA bundle is published in the
	// ConfigMap CAConfigMap ("podwall-policygen-ca") of Namespace, which the injector hands to the
	// sidecars it injects.
	TLS         certs.Serving
	CAConfigMap string
	// Audience is what sidecar tokens must be issued for (policy.TokenAudience).
	Audience string
	// MaxWait bounds a long-poll (2m), MaxReportBytes a report body (2 MiB).
	MaxWait        time.Duration
	MaxReportBytes int64
	// ReportInterval and ReportBurst rate-limit reports per pod: one per interval on average, burst
	// at once (5s, 5).
	ReportInterval time.Duration
	ReportBurst    int
	// DNS is the cluster DNS Service every workload may reach (kube-system/kube-dns), ClusterDomain
	// the cluster's DNS suffix for Service names in URLs ("cluster.local").
	DNS           types.NamespacedName
	ClusterDomain string
	// LearnQuiet promotes Learn to Monitor after this long with nothing new learned; MonitorQuiet
	// promotes Monitor to Protect, for policies with autoProtect, after this long without an audit.
	// 0 disables a promotion.
	LearnQuiet, MonitorQuiet time.Duration
	// CanaryWindow is how long a canary rollout (spec.canary) runs without a deny before it passes (1h).
	CanaryWindow time.Duration
	// CollapseNamespace is how many workloads of one other namespace a policy's learned rules name on
	// one direction, protocol and port before they give way to their namespace (never; see learn.Merge).
	CollapseNamespace int
	// MetricsAddr serves Prometheus metrics (":8080"); "0" disables it.
	MetricsAddr string
	// HealthAddr serves /healthz and /readyz (":8081"); "0" disables it.
	HealthAddr string
	// LeaderElect elects one replica to write policies; every replica serves the API. Off, this
	// replica writes as if it led.
	LeaderElect bool
	// Namespace is policygen's own namespace, where the leader Lease lives ("podwall-system").
	Namespace string
	// Replica names this replica in WorkloadPolicy status ("policygen"; the pod's name in a cluster).
	Replica string
	// KubeQPS and KubeBurst bound the requests to the API server (50, 100): TokenReviews of
	// reconnecting sidecars and status writes go through them.
	KubeQPS   float32
	KubeBurst int
	// ReplicaStatusTTL is how long a replica's entry in WorkloadPolicy status counts without being
	// refreshed (2m): a killed replica's sidecars stop counting after it.
	ReplicaStatusTTL time.Duration
	// NetworkPolicySync keeps a NetworkPolicy per WorkloadPolicy in Protect, for the network plugin to
	// enforce beside podwall (see package netpolsync); off by default.
	NetworkPolicySync bool
	// Registerer receives policygen's metrics (controller-runtime's metrics.Registry, which the
	// manager serves on MetricsAddr).
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	o.APIAddr = cmp.Or(o.APIAddr, ":8443")
	o.MetricsAddr = cmp.Or(o.MetricsAddr, ":8080")
	o.HealthAddr = cmp.Or(o.HealthAddr, ":8081")
	o.Namespace = cmp.Or(o.Namespace, "podwall-system")
	o.TLS.SetDefaults("podwall-policygen", o.Namespace)
	o.CAConfigMap = cmp.Or(o.CAConfigMap, "podwall-policygen-ca")
	o.Replica = cmp.Or(o.Replica, "policygen")
	o.KubeQPS = cmp.Or(o.KubeQPS, 50)
	o.KubeBurst = cmp.Or(o.KubeBurst, 100)
	o.ReplicaStatusTTL = cmp.Or(o.ReplicaStatusTTL, 2*time.Minute)
	if o.Registerer == nil {
		o.Registerer = metrics.Registry
	}
}

// Run runs policygen against the cluster kube points to until ctx ends.
func Run(ctx context.Context, kube *rest.Config, opts Options, log logr.Logger) error {
	opts.setDefaults()
	kube = rest.CopyConfig(kube)
	kube.QPS, kube.Burst = opts.KubeQPS, opts.KubeBurst
	mgr, err := ctrl.NewManager(kube, ctrl.Options{
		Scheme:                        scheme.New(),
		Logger:                        log,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:        opts.HealthAddr,
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              "podwall-policygen",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		// managedFields are most of a cached object and nothing here reads them.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		// controller-runtime refuses a controller name already used in the process, whatever
		// Registerer is given, because its own controller metrics are process-wide and labelled by
		// name alone. A test process may run Run more than once (go test -count=2 of an in-process
		// test), and the second run's controllers then only share those series; a binary runs Run once.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return fmt.Errorf("new manager: %w", err)
	}
	if err := setup(ctx, mgr, opts, kube, log); err != nil {
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
	log.Info("starting policygen", "version", version.Version, "replica", opts.Replica, "api", opts.APIAddr, "leaderElection", opts.LeaderElect)
	return mgr.Start(ctx)
}

// setup registers every part with the manager.
func setup(ctx context.Context, mgr ctrl.Manager, opts Options, kube *rest.Config, log logr.Logger) error {
	if err := version.Register(opts.Registerer); err != nil {
		return fmt.Errorf("register build info: %w", err)
	}
	if err := resolve.Index(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	hub := resolve.NewHub(mgr.GetCache(), resolve.HubOptions{Registerer: opts.Registerer}, log.WithName("resolve"))
	if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
		return err
	}
	gen := generator.New(mgr.GetClient(), generator.Options{DNS: opts.DNS, ClusterDomain: opts.ClusterDomain,
		Events: mgr.GetEventRecorder("podwall-policygen"), APIReader: mgr.GetAPIReader()})
	if err := gen.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	prom := learn.NewPromoter(mgr.GetClient(), mgr.GetCache(), learn.PromoteOptions{
		LearnQuiet: opts.LearnQuiet, MonitorQuiet: opts.MonitorQuiet, Stale: opts.ReplicaStatusTTL,
		CanaryWindow: opts.CanaryWindow, Events: mgr.GetEventRecorder("podwall-policygen"),
	})
	if err := prom.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("promoter: %w", err)
	}
	learner := learn.NewLearner(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(),
		learn.LearnerOptions{Registerer: opts.Registerer, CollapseNamespace: opts.CollapseNamespace}, log.WithName("learn"))
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	if opts.NetworkPolicySync {
		if err := setupNetworkPolicySync(ctx, mgr, cs, opts); err != nil {
			return err
		}
	}
	cert, err := opts.TLS.Start(ctx, cs, "podwall-policygen-ca", certs.PublishConfigMap(cs, opts.TLS.Namespace, opts.CAConfigMap), log.WithName("certs"))
	if err != nil {
		return err
	}
	reviewer, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		return err
	}
	feed := ui.NewFeed(mgr.GetCache(), 0)
	peers := &ui.Peers{Namespace: opts.TLS.Namespace, Service: opts.TLS.Service, Port: ui.APIPort, ServerName: opts.TLS.Hosts()[0],
		CA: func(ctx context.Context) (*x509.CertPool, error) {
			cm, err := cs.CoreV1().ConfigMaps(opts.TLS.Namespace).Get(ctx, opts.CAConfigMap, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("read policygen's CA bundle: %w", err)
			}
			return certs.PublishedCA(cm)
		}}
	web := ui.New(ui.Options{Replica: opts.Replica, Peers: peers, Policies: hub}, mgr.GetCache(), mgr.GetClient(), reviewer, feed, log.WithName("ui"))
	srv := policyapi.New(policyapi.Options{
		Addr: opts.APIAddr, Cert: cert, Audience: opts.Audience,
		MaxWait: opts.MaxWait, MaxReportBytes: opts.MaxReportBytes,
		ReportInterval: opts.ReportInterval, ReportBurst: opts.ReportBurst, Replica: opts.Replica,
		StatusTTL: opts.ReplicaStatusTTL, UI: web.Handler(), Registerer: opts.Registerer,
		APIReader: mgr.GetAPIReader(), Events: mgr.GetEventRecorder("podwall-policygen"),
	}, hub, reviewer, mgr.GetCache(), mgr.GetClient(), feed.Sink(learn.NewCanaryGuard(learner, mgr.GetCache(), mgr.GetAPIReader(),
		mgr.GetClient(), mgr.GetEventRecorder("podwall-policygen"), log.WithName("canary"))), log.WithName("api"))
	// These run on every replica (they say so with NeedLeaderElection).
	for _, r := range []manager.Runnable{hub, learner, srv} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("add runnable: %w", err)
		}
	}
	return nil
}

// setupNetworkPolicySync checks that policygen may write NetworkPolicies and registers the syncer; the
// NetworkPolicies it keeps allow the sidecars' egress to this policy API: the policygen Service's
// pods, on the port APIAddr listens on.
func setupNetworkPolicySync(ctx context.Context, mgr ctrl.Manager, cs kubernetes.Interface, opts Options) error {
	if err := netpolsync.CheckAccess(ctx, cs.AuthorizationV1()); err != nil {
		return err
	}
	_, p, err := net.SplitHostPort(opts.APIAddr)
	if err != nil {
		return fmt.Errorf("api address %q: %w", opts.APIAddr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("api address %q: the NetworkPolicy sync needs a numeric port", opts.APIAddr)
	}
	syncer := netpolsync.New(mgr.GetClient(), netpolsync.Options{
		PolicyAPI:     v1alpha1.ServicePeer{Namespace: opts.TLS.Namespace, Name: opts.TLS.Service},
		PolicyAPIPort: int32(port),
		Events:        mgr.GetEventRecorder("podwall-policygen"),
	})
	if err := syncer.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("networkpolicy sync: %w", err)
	}
	return nil
}
