package injector

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/internal/certs"
)

// TestCertKeeper checks the injector's part of managed TLS against the real API server: the Secret's
// CA bundle goes into every webhook of the configuration before the certificate is served, a reset
// caBundle is repaired at the next check, and a configuration not applied yet is no error. Issuing and
// renewing the certificate in the Secret are internal/certs' tests.
func TestCertKeeper(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	opts := certs.Options{Namespace: "podwall-system", Secret: "certs-test", CAName: "podwall-injector-ca",
		Hosts: []string{"podwall-injector.podwall-system.svc", "127.0.0.1"}, Validity: 30 * 24 * time.Hour, RenewBefore: 7 * 24 * time.Hour,
		Publish: caBundlePublisher(c.cs, "certs-test", testr.New(t))}
	k := certs.NewManager(c.cs, opts, testr.New(t))
	t.Run("configuration not applied yet", func(t *testing.T) {
		if _, err := k.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := k.GetCertificate(nil); err != nil {
			t.Fatal(err)
		}
	})

	hook := func(name string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, AdmissionReviewVersions: []string{"v1"},
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			ClientConfig:      admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/none")},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}},
		}
	}
	mwcAPI := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mwcAPI.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "certs-test"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook("a.certs.podwall.io"), hook("b.certs.podwall.io")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// check runs Ensure and checks that every webhook trusts the Secret's bundle and the bundle
	// verifies the served certificate for every host.
	check := func(t *testing.T) {
		t.Helper()
		if _, err := k.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		secret, err := c.cs.CoreV1().Secrets("podwall-system").Get(ctx, "certs-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc, err := mwcAPI.Get(ctx, "certs-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, wh := range mwc.Webhooks {
			if string(wh.ClientConfig.CABundle) != string(secret.Data[certs.KeyCABundle]) {
				t.Fatalf("webhook %s: caBundle is not the Secret's bundle", wh.Name)
			}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(secret.Data[certs.KeyCABundle]) {
			t.Fatal("no CA in the bundle")
		}
		cert, err := k.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range opts.Hosts {
			if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
				t.Fatalf("served certificate for %s: %v", h, err)
			}
		}
	}
	t.Run("caBundle set on every webhook", check)
	t.Run("a reset caBundle is repaired", func(t *testing.T) {
		mwc, err := mwcAPI.Get(ctx, "certs-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc.Webhooks[1].ClientConfig.CABundle = nil
		if _, err := mwcAPI.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
}

// testExternalCerts serves the webhook with a mounted certificate (cert-mode=external), as with
// cert-manager: the injector reads tls.crt and tls.key and leaves the caBundle alone.
func testExternalCerts(t *testing.T, c *cluster) {
	now := time.Now()
	ca, err := certs.NewCA("external-ca", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Request{Hosts: []string{"127.0.0.1"}, Now: now, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": leaf.CertPEM(), "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	c.installWebhook(t, "podwall-injector-external", port, ca.CertPEM())
	c.runInjector(t, Options{Port: port, TLS: certs.Serving{External: true, CertDir: dir}})
	c.waitInjecting(t, "opted")
}
