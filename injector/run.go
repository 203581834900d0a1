package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"podwall.io/podwall/internal/version"
)

// Run serves the webhook, against the cluster kube points to, until ctx ends. It first obtains its
// serving certificate (so the server never starts without one) and then keeps it renewed or reloaded.
func Run(ctx context.Context, kube *rest.Config, opts Options, log logr.Logger) error {
	opts.setDefaults()
	cs, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	native, err := detectNative(opts.NativeSidecars, cs.Discovery())
	if err != nil {
		return err
	}
	opts.Sidecar.NativeSidecars = native
	log.Info("injector starting", "nativeSidecars", native, "externalCert", opts.TLS.External)

	cert, err := opts.TLS.Start(ctx, cs, "podwall-injector-ca", caBundlePublisher(cs, opts.WebhookConfig, log), log.WithName("certs"))
	if err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{Port: opts.Port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = cert.GetCertificate }}})
	mgr, err := manager.New(kube, manager.Options{
		Logger: log,
		// The injector reads ConfigMaps of its own namespace only: the platform's settings and
		// policygen's CA bundle.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{opts.TLS.Namespace: {}}},
		}},
		Metrics:                metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress: opts.HealthAddr,
		WebhookServer:          srv,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if opts.Sidecar.Platform == nil {
		// NewPlatform registers the ConfigMap informer now, so that the cache starts it with the manager.
		platform, err := NewPlatform(ctx, mgr.GetCache(), opts.TLS.Namespace, opts.PolicyGenCAConfigMap, opts.Sidecar.Resources, log.WithName("platform"))
		if err != nil {
			return err
		}
		opts.Sidecar.Platform = platform
	}
	if err := version.Register(opts.Registerer); err != nil {
		return fmt.Errorf("register build info: %w", err)
	}
	// GetWebhookServer adds the server to the manager's runnables.
	Register(mgr.GetWebhookServer(), New(opts.Sidecar), opts.Registerer)
	if err := mgr.Add(manager.RunnableFunc(cert.Keep)); err != nil {
		return fmt.Errorf("add certificate keeper: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	if err := mgr.AddReadyzCheck("platform", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("platform ConfigMaps not read yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	return mgr.Start(ctx)
}
