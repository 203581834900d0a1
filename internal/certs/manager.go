package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
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

// Keys of a managed certificate Secret. KeyCABundle is the bundle that clients trust: the current CA
// first, then earlier CAs while they are valid, so that replicas still serving a certificate of the
// previous CA keep working through a CA rotation. KeyCAKey is the current CA's key.
const (
	KeyCABundle = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCert     = corev1.TLSCertKey
	KeyKey      = corev1.TLSPrivateKeyKey
)

// caValidity is a managed CA's lifetime. It is renewed once a certificate issued now could outlive it.
const caValidity = 10 * 365 * 24 * time.Hour

// resync bounds how long a replica goes without re-reading the Secret and publishing the CA bundle
// again: it picks up another replica's renewal and repairs a published bundle that someone reset.
const resync = time.Minute

// Options configure a Manager. All but Publish and Now are required.
type Options struct {
	// Namespace and Secret locate the Secret keeping the CA and serving certificate.
	Namespace, Secret string
	// CAName is the common name of a CA the Manager creates.
	CAName string
	// Hosts are the serving certificate's DNS names and IP addresses.
	Hosts []string
	// Validity of a serving certificate and how long before its end it is renewed.
	Validity, RenewBefore time.Duration
	// Publish, when set, hands the CA bundle to those who verify the certificate at every check,
	// before a new certificate is served: they must trust it first. Its error fails the check.
	Publish func(ctx context.Context, caBundle []byte) error
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Manager keeps a serving certificate: it creates a CA and certificate in a Secret when there are
// none, renews them before they expire, publishes the CA bundle and hands the current certificate to
// the TLS server. Replicas share the Secret; an update that loses the race is retried after re-reading
// the winner's.
type Manager struct {
	opts    Options
	client  kubernetes.Interface
	log     logr.Logger
	current atomic.Pointer[tls.Certificate]
}

// NewManager returns a manager; call EnsureFirst before serving, then Run.
func NewManager(client kubernetes.Interface, opts Options, log logr.Logger) *Manager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{opts: opts, client: client, log: log.WithValues("secret", opts.Namespace+"/"+opts.Secret)}
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.current.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet")
}

// EnsureFirst obtains the first certificate, retrying while the API server is unreachable or another
// replica wins the race to create the Secret, until ctx ends.
func (m *Manager) EnsureFirst(ctx context.Context) error {
	var err error
	retry := wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Steps: math.MaxInt, Cap: 10 * time.Second}
	for {
		if _, err = m.Ensure(ctx); err == nil {
			return nil
		}
		next := retry.Step()
		m.log.Error(err, "first certificate; retrying", "in", next)
		select {
		case <-ctx.Done():
			return fmt.Errorf("first certificate: %w", err)
		case <-time.After(next):
		}
	}
}

// Run re-checks the certificate until ctx ends: at each resync and in time to renew. Failures are
// retried with backoff; the last good certificate stays in use meanwhile.
func (m *Manager) Run(ctx context.Context) error {
	fresh := wait.Backoff{Duration: time.Second, Factor: 2, Steps: math.MaxInt, Cap: resync}
	retry := fresh
	for {
		next, err := m.Ensure(ctx)
		if err != nil {
			next = retry.Step()
			m.log.Error(err, "keeping the certificate; retrying", "in", next)
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

// Ensure makes the Secret hold a valid CA and serving certificate (creating or renewing them),
// publishes the CA bundle and serves the certificate. It returns how long until the next check.
func (m *Manager) Ensure(ctx context.Context) (time.Duration, error) {
	api := m.client.CoreV1().Secrets(m.opts.Namespace)
	secret, err := api.Get(ctx, m.opts.Secret, metav1.GetOptions{})
	exists := err == nil
	if apierrors.IsNotFound(err) {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: m.opts.Secret, Namespace: m.opts.Namespace}, Type: corev1.SecretTypeOpaque}
	} else if err != nil {
		return 0, fmt.Errorf("get secret %s/%s: %w", m.opts.Namespace, m.opts.Secret, err)
	}
	data, leaf, reason, err := m.fresh(secret.Data)
	if err != nil {
		return 0, err
	}
	if reason != "" {
		secret.Data = data
		if exists {
			_, err = api.Update(ctx, secret, metav1.UpdateOptions{})
		} else {
			_, err = api.Create(ctx, secret, metav1.CreateOptions{})
		}
		if err != nil {
			// Conflict or AlreadyExists: another replica renewed first; the retry reads its certificate.
			return 0, fmt.Errorf("store secret %s/%s: %w", m.opts.Namespace, m.opts.Secret, err)
		}
		m.log.Info("certificate issued", "notAfter", leaf.Cert.NotAfter, "reason", reason)
	}
	if m.opts.Publish != nil {
		if err := m.opts.Publish(ctx, data[KeyCABundle]); err != nil {
			return 0, err
		}
	}
	cert := leaf.TLSCertificate()
	m.current.Store(&cert)
	return min(leaf.Cert.NotAfter.Add(-m.opts.RenewBefore).Sub(m.opts.Now()), resync), nil
}

// fresh returns Secret data that is good now, with its serving certificate: data itself if it is
// good, else data with a new serving certificate and, when the CA is missing, broken or near its end,
// a new CA. reason says why the data had to change, empty when it did not.
func (m *Manager) fresh(data map[string][]byte) (_ map[string][]byte, leaf *KeyPair, reason string, _ error) {
	now := m.opts.Now()
	ca, err := ParseKeyPair(data[KeyCABundle], data[KeyCAKey])
	if err == nil {
		// The CA must outlast every certificate it issues from now on.
		err = Check(ca.Cert, Want{IsCA: true, Until: now.Add(m.opts.Validity + m.opts.RenewBefore)})
	}
	out := map[string][]byte{KeyCABundle: data[KeyCABundle], KeyCAKey: data[KeyCAKey]}
	if err != nil {
		reason = "CA: " + err.Error()
		if ca, err = m.newCA(now, out); err != nil {
			return nil, nil, "", err
		}
	} else {
		leaf, err = ParseKeyPair(data[KeyCert], data[KeyKey])
		if err == nil {
			err = Check(leaf.Cert, Want{Until: now.Add(m.opts.RenewBefore), CA: ca.Cert, Hosts: m.opts.Hosts})
		}
		if err == nil {
			return data, leaf, "", nil
		}
		reason = "serving certificate: " + err.Error()
	}
	if leaf, err = ca.Issue(Request{Hosts: m.opts.Hosts, Now: now, Validity: m.opts.Validity}); err != nil {
		return nil, nil, "", fmt.Errorf("issue serving certificate: %w", err)
	}
	if out[KeyKey], err = leaf.KeyPEM(); err != nil {
		return nil, nil, "", err
	}
	out[KeyCert] = leaf.CertPEM()
	return out, leaf, reason, nil
}

// newCA creates a CA and puts it into data, keeping the CAs of data's bundle that are still valid
// after it.
func (m *Manager) newCA(now time.Time, data map[string][]byte) (*KeyPair, error) {
	ca, err := NewCA(m.opts.CAName, now, caValidity)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	bundle := ca.CertPEM()
	for rest := data[KeyCABundle]; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && now.Before(c.NotAfter) {
			bundle = append(bundle, pem.EncodeToMemory(block)...)
		}
	}
	data[KeyCABundle], data[KeyCAKey] = bundle, key
	return ca, nil
}
