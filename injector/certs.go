package injector

import (
	"bytes"
	"context"
	"fmt"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// caBundlePublisher returns the Publish function of the webhook's managed certificate: the CA
// bundle goes into the caBundle of every webhook of the configuration name before a certificate it
// signs is served, so that the API server trusts it.
func caBundlePublisher(client kubernetes.Interface, name string, log logr.Logger) func(context.Context, []byte) error {
	return func(ctx context.Context, caBundle []byte) error {
		return patchCABundle(ctx, client, name, caBundle, log)
	}
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
