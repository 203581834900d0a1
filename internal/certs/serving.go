package certs

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// Serving says where a server in the cluster gets its TLS certificate: from a folder someone else
// keeps (cert-manager, say), or from a Manager that keeps a CA and certificate in a Secret. The
// injector and policygen both serve through it.
type Serving struct {
	// External serves CertDir's tls.crt and tls.key, re-read when they change; whoever issues them
	// also tells clients which CA to trust. Otherwise the certificate is managed: kept in Secret,
	// renewed, and its CA bundle handed to Publish.
	External bool
	CertDir  string
	// Namespace and Service name the Service in front of the server, whose DNS names the managed
	// certificate carries, and Namespace holds Secret.
	Namespace, Service, Secret string
	// ExtraHosts are more DNS names or IP addresses for the managed certificate.
	ExtraHosts []string
	// Validity of a managed serving certificate and how long before its end it is renewed.
	Validity, RenewBefore time.Duration
}

// Hosts are the managed certificate's names: the Service's DNS names and ExtraHosts.
func (s Serving) Hosts() []string {
	svc := s.Service + "." + s.Namespace
	return append([]string{svc + ".svc", svc, svc + ".svc.cluster.local"}, s.ExtraHosts...)
}

// Source is a serving certificate in use: GetCertificate for tls.Config, and Keep, which renews it
// (managed) or watches its files (external) until ctx ends. Keep must run on every replica that
// serves.
type Source struct {
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Keep           func(ctx context.Context) error
}

// Start obtains the first certificate, so that no server starts without one, and returns its
// Source. A managed certificate is created by a CA named caName, and publish (which may be nil)
// receives its CA bundle before any certificate it signs is served; Start retries while the API
// server is unreachable, until ctx ends.
func (s Serving) Start(ctx context.Context, client kubernetes.Interface, caName string, publish func(context.Context, []byte) error, log logr.Logger) (Source, error) {
	if s.External {
		dir := cmp.Or(s.CertDir, ".")
		cw, err := certwatcher.New(filepath.Join(dir, corev1.TLSCertKey), filepath.Join(dir, corev1.TLSPrivateKeyKey))
		if err != nil {
			return Source{}, fmt.Errorf("load serving certificate from %s: %w", dir, err)
		}
		return Source{GetCertificate: cw.GetCertificate, Keep: cw.Start}, nil
	}
	m := NewManager(client, Options{
		Namespace:   s.Namespace,
		Secret:      s.Secret,
		CAName:      caName,
		Hosts:       s.Hosts(),
		Validity:    s.Validity,
		RenewBefore: s.RenewBefore,
		Publish:     publish,
	}, log)
	if err := m.EnsureFirst(ctx); err != nil {
		return Source{}, err
	}
	return Source{GetCertificate: m.GetCertificate, Keep: m.Run}, nil
}

// SetDefaults fills in what is unset for the server called name in namespace (when Namespace is
// unset): Service name, Secret name-tls, CertDir /var/run/name/certs, Validity 365 days and
// RenewBefore 30 days.
func (s *Serving) SetDefaults(name, namespace string) {
	s.Namespace = cmp.Or(s.Namespace, namespace)
	s.Service = cmp.Or(s.Service, name)
	s.Secret = cmp.Or(s.Secret, name+"-tls")
	s.CertDir = cmp.Or(s.CertDir, "/var/run/"+name+"/certs")
	s.Validity = cmp.Or(s.Validity, 365*24*time.Hour)
	s.RenewBefore = cmp.Or(s.RenewBefore, 30*24*time.Hour)
}

// PublishConfigMap returns a Publish function that keeps the CA bundle in the ConfigMap
// namespace/name under KeyCABundle, creating it when missing, for clients that read it from there.
func PublishConfigMap(client kubernetes.Interface, namespace, name string) func(context.Context, []byte) error {
	return func(ctx context.Context, caBundle []byte) error {
		api := client.CoreV1().ConfigMaps(namespace)
		cm, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
			cm.Data = map[string]string{KeyCABundle: string(caBundle)}
			if _, err := api.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("publish CA bundle in configmap %s/%s: %w", namespace, name, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("get configmap %s/%s: %w", namespace, name, err)
		}
		if cm.Data[KeyCABundle] == string(caBundle) {
			return nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[KeyCABundle] = string(caBundle)
		if _, err := api.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("publish CA bundle in configmap %s/%s: %w", namespace, name, err)
		}
		return nil
	}
}

// PublishedCA reads the CA bundle a PublishConfigMap function keeps in cm into a pool, for clients
// that verify the server by it.
func PublishedCA(cm *corev1.ConfigMap) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[KeyCABundle])) {
		return nil, fmt.Errorf("ConfigMap %s/%s holds no PEM certificate under %s", cm.Namespace, cm.Name, KeyCABundle)
	}
	return pool, nil
}
