package injector

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"podwall.io/podwall/internal/certs"
)

// CertOptions configure managed TLS.
type CertOptions struct {
	// Namespace and Secret locate the Secret keeping the CA and serving certificate.
	Namespace, Secret string
	// WebhookConfig is the MutatingWebhookConfiguration whose webhooks get the caBundle.
	WebhookConfig string
	// Hosts are the serving certificate's DNS names and IP addresses.
	Hosts []string
	// Validity of a serving certificate and how long before its end it is renewed.
	Validity, RenewBefore time.Duration
}

// NewCertKeeper returns the manager of the webhook's serving certificate: a CA and certificate kept in
// a Secret shared by the replicas and renewed before they expire, whose CA bundle goes into the
// webhook configuration's caBundle before a certificate is served, so that the API server trusts it.
func NewCertKeeper(client kubernetes.Interface, opts CertOptions, log logr.Logger) *certs.Manager {
	return certs.NewManager(client, certs.Options{
		Namespace:   opts.Namespace,
		Secret:      opts.Secret,
		CAName:      "podwall-injector-ca",
		Hosts:       opts.Hosts,
		Validity:    opts.Validity,
		RenewBefore: opts.RenewBefore,
		Publish: func(ctx context.Context, caBundle []byte) error {
			return patchCABundle(ctx, client, opts.WebhookConfig, caBundle, log)
		},
	}, log)
}

// patchCABundle sets caBundle on every webhook of the configuration that lacks it. A missing
// configuration is no error: it may be applied after the injector starts, and the next resync
// patches it.
func patchCABundle(ctx context.Context, client kubernetes.Interface, name string, caBundle []byte, log logr.Logger) error {
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		log.Info("webhook configuration not found; caBundle not set yet", "name", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get webhook configuration %s: %w", name, err)
	}
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, caBundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = caBundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update caBundle of %s: %w", name, err)
	}
	log.Info("caBundle updated", "webhookConfiguration", name)
	return nil
}
