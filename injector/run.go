package injector

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"podwall.io/podwall/config"
)

// Run serves the webhook until ctx ends. In managed TLS mode it first makes sure a certificate exists
// (so the server never starts without one) and then keeps it renewed.
func Run(ctx context.Context, kube *rest.Config, cfg config.Injector, log logr.Logger) error {
	client, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	native, err := detectNative(cfg.NativeSidecars, client.Discovery())
	if err != nil {
		return err
	}
	opts, err := optionsFrom(cfg.Sidecar, native)
	if err != nil {
		return err
	}
	log.Info("injector starting", "nativeSidecars", native, "certMode", cfg.TLS.Mode)

	serverOpts := webhook.Options{Port: cfg.Serve.Port, CertDir: cfg.TLS.CertDir}
	var keeper *CertKeeper
	if cfg.TLS.Mode == config.CertManaged {
		keeper = NewCertKeeper(client, certOptions(cfg.TLS), log.WithName("certs"))
		if err := ensureFirst(ctx, keeper); err != nil {
			return err
		}
		serverOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = keeper.GetCertificate }}
	}
	srv := webhook.NewServer(serverOpts)
	mgr, err := manager.New(kube, manager.Options{
		Logger:                 log,
		Metrics:                metricsserver.Options{BindAddress: cfg.Serve.MetricsAddr},
		HealthProbeBindAddress: cfg.Serve.HealthAddr,
		WebhookServer:          srv,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	// GetWebhookServer adds the server to the manager's runnables.
	Register(mgr.GetWebhookServer(), New(opts))
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
	return mgr.Start(ctx)
}

// certOptions names the Service's DNS names and the extra hosts in the serving certificate.
func certOptions(c config.InjectorTLS) CertOptions {
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

// ensureFirst obtains the first certificate, retrying while the API server is unreachable or another
// replica wins the race to create the Secret.
func ensureFirst(ctx context.Context, k *CertKeeper) error {
	var err error
	retry := wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Steps: math.MaxInt, Cap: 10 * time.Second}
	for {
		if _, err = k.Ensure(ctx); err == nil {
			return nil
		}
		next := retry.Step()
		k.log.Error(err, "first webhook certificate; retrying", "in", next)
		select {
		case <-ctx.Done():
			return fmt.Errorf("first webhook certificate: %w", err)
		case <-time.After(next):
		}
	}
}
