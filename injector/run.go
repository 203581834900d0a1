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

	"podwall.io/podwall/internal/certs"
)

// Run serves the webhook, against the cluster kube points to, until ctx ends. With a managed
// certificate it first makes sure one exists (so the server never starts without one) and then keeps
// it renewed.
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

	serverOpts := webhook.Options{Port: opts.Port, CertDir: opts.TLS.CertDir}
	var keeper *certs.Manager
	if !opts.TLS.External {
		keeper = NewCertKeeper(cs, certOptions(opts.TLS), log.WithName("certs"))
		if err := keeper.EnsureFirst(ctx); err != nil {
			return err
		}
		serverOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = keeper.GetCertificate }}
	}
	srv := webhook.NewServer(serverOpts)
	mgr, err := manager.New(kube, manager.Options{
		Logger: log,
		// The injector reads ConfigMaps of its own namespace only (the platform's settings).
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
		// Register the ConfigMap informer now, so that the cache starts it with the manager.
		if _, err := mgr.GetCache().GetInformer(ctx, &corev1.ConfigMap{}); err != nil {
			return fmt.Errorf("watch the platform ConfigMap: %w", err)
		}
		opts.Sidecar.Platform = NewPlatform(mgr.GetCache(), opts.TLS.Namespace, log.WithName("platform"))
	}
	// GetWebhookServer adds the server to the manager's runnables.
	Register(mgr.GetWebhookServer(), New(opts.Sidecar), opts.Registerer)
	if keeper != nil {
		if err := mgr.Add(manager.RunnableFunc(keeper.Run)); err != nil {
			return fmt.Errorf("add certificate keeper: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	if err := mgr.AddReadyzCheck("platform", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("platform ConfigMap not read yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	return mgr.Start(ctx)
}

// certOptions names the Service's DNS names and the extra hosts in the serving certificate.
func certOptions(c TLSOptions) CertOptions {
	svc := c.Service + "." + c.Namespace
	return CertOptions{
		Namespace:     c.Namespace,
		Secret:        c.Secret,
		WebhookConfig: c.WebhookConfig,
		Hosts:         append([]string{svc + ".svc", svc, svc + ".svc.cluster.local"}, c.ExtraHosts...),
		Validity:      c.Validity,
		RenewBefore:   c.RenewBefore,
	}
}
