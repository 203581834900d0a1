package injector

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestCertKeeper drives renewal with a clock of the test's own against the real API server.
func TestCertKeeper(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	hook := admissionregistrationv1.MutatingWebhook{
		Name: "certs.podwall.io", AdmissionReviewVersions: []string{"v1"},
		SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
		ClientConfig:      admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/none")},
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}},
	}
	mwcAPI := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mwcAPI.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "certs-test"}, Webhooks: []admissionregistrationv1.MutatingWebhook{hook},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	opts := CertOptions{Namespace: "podwall-system", Secret: "certs-test", WebhookConfig: "certs-test",
		Hosts: []string{"podwall-injector.podwall-system.svc", "127.0.0.1"}, Validity: 30 * 24 * time.Hour, RenewBefore: 7 * 24 * time.Hour}
	newKeeper := func(o CertOptions) *CertKeeper {
		k := NewCertKeeper(c.cs, o, testr.New(t))
		k.now = func() time.Time { return now }
		return k
	}
	k := newKeeper(opts)

	// state runs Ensure and returns the served leaf, the Secret's CA bundle and its resourceVersion,
	// after checking that the webhook configuration trusts that bundle and the bundle verifies the leaf.
	state := func(k *CertKeeper) (*x509.Certificate, []*x509.Certificate, string) {
		t.Helper()
		if _, err := k.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		cert, err := k.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
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
		if string(mwc.Webhooks[0].ClientConfig.CABundle) != string(secret.Data[keyCABundle]) {
			t.Fatal("caBundle is not the Secret's bundle")
		}
		cas := parseCerts(t, secret.Data[keyCABundle])
		pool := x509.NewCertPool()
		pool.AddCert(cas[0])
		for _, h := range opts.Hosts {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h, CurrentTime: now}); err != nil {
				t.Fatalf("served certificate for %s: %v", h, err)
			}
		}
		return leaf, cas, secret.ResourceVersion
	}

	leaf1, cas1, rv1 := state(k)
	if len(cas1) != 1 {
		t.Fatalf("first bundle holds %d CAs, want 1", len(cas1))
	}
	t.Run("steady state writes nothing", func(t *testing.T) {
		now = now.Add(time.Hour)
		leaf, _, rv := state(k)
		if rv != rv1 || !leaf.Equal(leaf1) {
			t.Fatal("Secret or certificate changed though nothing was due")
		}
	})
	t.Run("certificate renewed before expiry under the same CA", func(t *testing.T) {
		now = leaf1.NotAfter.Add(-opts.RenewBefore + time.Minute)
		leaf, cas, _ := state(k)
		if leaf.Equal(leaf1) || !cas[0].Equal(cas1[0]) || len(cas) != 1 {
			t.Fatalf("renewed %v, CA kept %v, %d CAs", !leaf.Equal(leaf1), cas[0].Equal(cas1[0]), len(cas))
		}
	})
	t.Run("CA renewed near its end; the old one stays trusted", func(t *testing.T) {
		now = cas1[0].NotAfter.Add(-opts.Validity)
		_, cas, _ := state(k)
		if len(cas) != 2 || cas[0].Equal(cas1[0]) || !cas[1].Equal(cas1[0]) {
			t.Fatalf("bundle of %d CAs, want the new CA then the old", len(cas))
		}
	})
	t.Run("another host reissues", func(t *testing.T) {
		before, _, _ := state(k)
		o := opts
		o.Hosts = append(o.Hosts, "injector.example")
		after, _, _ := state(newKeeper(o))
		if after.Equal(before) || after.VerifyHostname("injector.example") != nil {
			t.Fatal("certificate not reissued for the new host")
		}
	})
	t.Run("garbage in the Secret is replaced", func(t *testing.T) {
		secret, err := c.cs.CoreV1().Secrets("podwall-system").Get(ctx, "certs-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret.Data = map[string][]byte{keyCABundle: []byte("junk"), keyCert: []byte("-----BEGIN CERTIFICATE-----\n")}
		if _, err := c.cs.CoreV1().Secrets("podwall-system").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		state(k)
	})
	t.Run("replicas racing agree on one certificate", func(t *testing.T) {
		o := opts
		o.Secret = "certs-race"
		a, b := newKeeper(o), newKeeper(o)
		var wg sync.WaitGroup
		for _, k := range []*CertKeeper{a, b} {
			wg.Go(func() { _, _ = k.Ensure(ctx) }) // the loser's error is retried below, as Run would
		}
		wg.Wait()
		for _, k := range []*CertKeeper{a, b} {
			if _, err := k.Ensure(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ca, _ := a.GetCertificate(nil)
		cb, _ := b.GetCertificate(nil)
		if string(ca.Certificate[0]) != string(cb.Certificate[0]) {
			t.Fatal("replicas serve different certificates")
		}
	})
}

func parseCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// testExternalCerts serves the webhook with a mounted certificate (cert-mode=external), as with
// cert-manager: the injector reads tls.crt and tls.key and leaves the caBundle alone.
func testExternalCerts(t *testing.T, c *cluster) {
	k := &CertKeeper{opts: CertOptions{Hosts: []string{"127.0.0.1"}, Validity: time.Hour}}
	b, err := newCA(time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.issue(b, time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": b.certPEM, "tls.key": b.keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	c.installWebhook(t, "podwall-injector-external", port, b.caBundle)
	c.runInjector(t, Options{Port: port, TLS: TLSOptions{External: true, CertDir: dir}})
	c.waitInjecting(t)
}
