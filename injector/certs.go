package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Keys of the certificate Secret. ca.crt is the bundle the API server trusts: the current CA first,
// then earlier CAs while they are valid, so that replicas still serving a certificate of the previous
// CA keep working through a CA rotation.
const (
	keyCABundle = "ca.crt"
	keyCAKey    = "ca.key"
	keyCert     = corev1.TLSCertKey
	keyKey      = corev1.TLSPrivateKeyKey
)

// resync bounds how long a replica goes without re-reading the Secret and re-checking the caBundle:
// it picks up another replica's renewal and repairs a caBundle that someone reset.
const resync = time.Minute

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

// CertKeeper keeps the webhook's serving certificate: it creates a CA and certificate in a Secret
// when there are none, renews them before they expire, keeps the caBundle of the webhook
// configuration in step and hands the current certificate to the TLS server. Replicas share the Secret;
// an update that loses the race is retried after re-reading the winner's.
type CertKeeper struct {
	opts    CertOptions
	client  kubernetes.Interface
	log     logr.Logger
	now     func() time.Time
	current atomic.Pointer[tls.Certificate]
}

// NewCertKeeper returns a keeper; call Ensure once before serving, then Run.
func NewCertKeeper(client kubernetes.Interface, opts CertOptions, log logr.Logger) *CertKeeper {
	return &CertKeeper{opts: opts, client: client, log: log, now: time.Now}
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (k *CertKeeper) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := k.current.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet")
}

// Run re-checks the certificate until ctx ends: at each resync and in time to renew. Failures are
// retried with backoff; the last good certificate stays in use meanwhile.
func (k *CertKeeper) Run(ctx context.Context) error {
	fresh := wait.Backoff{Duration: time.Second, Factor: 2, Steps: math.MaxInt, Cap: resync}
	retry := fresh
	for {
		next, err := k.Ensure(ctx)
		if err != nil {
			next = retry.Step()
			k.log.Error(err, "keeping the webhook certificate; retrying", "in", next)
		} else {
			retry = fresh
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// Ensure makes the Secret hold a valid CA and serving certificate (creating or renewing them), puts
// the CA bundle into the webhook configuration and serves the certificate. It returns how long until
// the next check.
func (k *CertKeeper) Ensure(ctx context.Context) (time.Duration, error) {
	secret, err := k.client.CoreV1().Secrets(k.opts.Namespace).Get(ctx, k.opts.Secret, metav1.GetOptions{})
	exists := err == nil
	if apierrors.IsNotFound(err) {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: k.opts.Secret, Namespace: k.opts.Namespace}, Type: corev1.SecretTypeOpaque}
	} else if err != nil {
		return 0, fmt.Errorf("get secret %s/%s: %w", k.opts.Namespace, k.opts.Secret, err)
	}
	b, changed, err := k.bundle(secret.Data)
	if err != nil {
		return 0, err
	}
	if changed {
		if err := k.store(ctx, secret, b, exists); err != nil {
			return 0, err
		}
		k.log.Info("webhook certificate issued", "notAfter", b.leaf.NotAfter)
	}
	// The API server must trust the certificate before it is served: caBundle first.
	if err := k.patchCABundle(ctx, b.caBundle); err != nil {
		return 0, err
	}
	cert, err := tls.X509KeyPair(b.certPEM, b.keyPEM)
	if err != nil {
		return 0, fmt.Errorf("load serving certificate: %w", err)
	}
	k.current.Store(&cert)
	return min(b.leaf.NotAfter.Add(-k.opts.RenewBefore).Sub(k.now()), resync), nil
}

func (k *CertKeeper) store(ctx context.Context, secret *corev1.Secret, b *certBundle, exists bool) error {
	secret.Data = map[string][]byte{keyCABundle: b.caBundle, keyCAKey: b.caKeyPEM, keyCert: b.certPEM, keyKey: b.keyPEM}
	var err error
	if exists {
		_, err = k.client.CoreV1().Secrets(k.opts.Namespace).Update(ctx, secret, metav1.UpdateOptions{})
	} else {
		_, err = k.client.CoreV1().Secrets(k.opts.Namespace).Create(ctx, secret, metav1.CreateOptions{})
	}
	if err != nil {
		// Conflict or AlreadyExists: another replica renewed first; the retry reads its certificate.
		return fmt.Errorf("store secret %s/%s: %w", k.opts.Namespace, k.opts.Secret, err)
	}
	return nil
}

// patchCABundle sets caBundle on every webhook of the configuration that lacks it. A missing
// configuration is no error: it may be applied after the injector starts, and the next resync
// patches it.
func (k *CertKeeper) patchCABundle(ctx context.Context, caBundle []byte) error {
	api := k.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, k.opts.WebhookConfig, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		k.log.Info("webhook configuration not found; caBundle not set yet", "name", k.opts.WebhookConfig)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get webhook configuration %s: %w", k.opts.WebhookConfig, err)
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
		return fmt.Errorf("update caBundle of %s: %w", k.opts.WebhookConfig, err)
	}
	k.log.Info("caBundle updated", "webhookConfiguration", k.opts.WebhookConfig)
	return nil
}
