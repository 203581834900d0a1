// Package pgtest starts what policygen's tests need: a real API server with the podwall CRDs installed,
// a client for it, and a controller-runtime manager whose caches the code under test reads.
package pgtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/policygen/scheme"
)

// Scheme knows the built-in types and podwall's.
func Scheme() *kruntime.Scheme { return scheme.New() }

// Start runs an API server with the CRDs and returns its config and a direct (uncached) client.
func Start(t testing.TB) (*rest.Config, client.Client) {
	t.Helper()
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{testenv.CRDDir()}})
	c, err := client.New(env.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return env.Config, c
}

// Manager returns a manager without leader election, metrics or probes; setup registers what the test
// runs in it before it starts, and the manager stops when the test ends.
func Manager(t testing.TB, cfg *rest.Config, setup func(manager.Manager) error) manager.Manager {
	t.Helper()
	return ManagerWithCache(t, cfg, cache.Options{}, setup)
}

// ManagerWithCache is Manager with a cache configured by opts: a test that must control when the cache
// learns of an object gives it a label selector the object does not match yet.
func ManagerWithCache(t testing.TB, cfg *rest.Config, opts cache.Options, setup func(manager.Manager) error) manager.Manager {
	t.Helper()
	mgr, err := manager.New(cfg, manager.Options{Scheme: Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, Cache: opts,
		// A test process starts a manager per test, and the same controllers in each; controller-runtime
		// refuses a name already used in the process (its controller metrics are process-wide).
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := setup(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return mgr
}

// Namespace creates a namespace with the given labels.
func Namespace(t testing.TB, c client.Client, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// TLS returns a listener on 127.0.0.1 serving a fresh certificate, and a client that trusts it.
func TLS(t testing.TB) (net.Listener, *http.Client) {
	t.Helper()
	_, leaf, client := serving(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	return ln, client
}

// CertDir writes a fresh certificate for 127.0.0.1 (and the extra addresses) and its key as PEM
// files tls.crt and tls.key into a folder, an external certificate's cert-dir, and returns the folder,
// the CA bundle (PEM) that verifies it and a client that trusts it.
func CertDir(t testing.TB, extra ...net.IP) (dir string, caPEM []byte, client *http.Client) {
	t.Helper()
	ca, leaf, client := serving(t, extra...)
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for path, data := range map[string][]byte{certFile: append(leaf.CertPEM(), ca.CertPEM()...), keyFile: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, ca.CertPEM(), client
}

// serving issues an hour's certificate for 127.0.0.1 and the extra addresses from a fresh CA, and
// returns both with a client that trusts the CA.
func serving(t testing.TB, extra ...net.IP) (ca, leaf *certs.KeyPair, client *http.Client) {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("policygen-test-ca", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.1"}
	for _, ip := range extra {
		hosts = append(hosts, ip.String())
	}
	leaf, err = ca.Issue(certs.Request{CommonName: "policygen", Hosts: hosts, Now: now, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ca, leaf, Trusting(t, ca.CertPEM())
}

// Trusting is an HTTPS client that trusts the CAs of the PEM bundle caPEM alone.
func Trusting(t testing.TB, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the CA bundle")
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 1000,
	}}
}
