package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"podwall.io/podwall/internal/testenv"
)

// TestManager drives renewal with a clock of the test's own against the real API server.
func TestManager(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "podwall-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clock := now
	var published []byte
	opts := Options{Namespace: "podwall-system", Secret: "certs-test", CAName: "test-ca",
		Hosts: []string{"podwall-policygen.podwall-system.svc", "127.0.0.1"}, Validity: 30 * 24 * time.Hour, RenewBefore: 7 * 24 * time.Hour,
		Publish: func(_ context.Context, caBundle []byte) error { published = caBundle; return nil },
		Now:     func() time.Time { return clock },
	}
	m := NewManager(cs, opts, testr.New(t))

	// state runs Ensure and returns the served leaf, the Secret's CA bundle and its resourceVersion,
	// after checking that the bundle was published and verifies the leaf for every host.
	state := func(m *Manager) (*x509.Certificate, []*x509.Certificate, string) {
		t.Helper()
		if _, err := m.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		cert, err := m.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := cs.CoreV1().Secrets("podwall-system").Get(ctx, m.opts.Secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(published) != string(secret.Data[KeyCABundle]) {
			t.Fatal("published bundle is not the Secret's bundle")
		}
		cas := parseCerts(t, secret.Data[KeyCABundle])
		pool := x509.NewCertPool()
		pool.AddCert(cas[0])
		for _, h := range m.opts.Hosts {
			if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h, CurrentTime: clock}); err != nil {
				t.Fatalf("served certificate for %s: %v", h, err)
			}
		}
		return cert.Leaf, cas, secret.ResourceVersion
	}

	leaf1, cas1, rv1 := state(m)
	if len(cas1) != 1 || cas1[0].Subject.CommonName != "test-ca" {
		t.Fatalf("first bundle holds %d CAs, want test-ca alone", len(cas1))
	}
	t.Run("steady state writes nothing", func(t *testing.T) {
		clock = clock.Add(time.Hour)
		leaf, _, rv := state(m)
		if rv != rv1 || !leaf.Equal(leaf1) {
			t.Fatal("Secret or certificate changed though nothing was due")
		}
	})
	t.Run("certificate renewed before expiry under the same CA", func(t *testing.T) {
		clock = leaf1.NotAfter.Add(-opts.RenewBefore + time.Minute)
		leaf, cas, _ := state(m)
		if leaf.Equal(leaf1) || !cas[0].Equal(cas1[0]) || len(cas) != 1 {
			t.Fatalf("renewed %v, CA kept %v, %d CAs", !leaf.Equal(leaf1), cas[0].Equal(cas1[0]), len(cas))
		}
	})
	t.Run("CA renewed near its end; the old one stays trusted", func(t *testing.T) {
		clock = cas1[0].NotAfter.Add(-opts.Validity)
		_, cas, _ := state(m)
		if len(cas) != 2 || cas[0].Equal(cas1[0]) || !cas[1].Equal(cas1[0]) {
			t.Fatalf("bundle of %d CAs, want the new CA then the old", len(cas))
		}
	})
	t.Run("another host reissues", func(t *testing.T) {
		before, _, _ := state(m)
		o := opts
		o.Hosts = append(o.Hosts, "policygen.example")
		after, _, _ := state(NewManager(cs, o, testr.New(t)))
		if after.Equal(before) || after.VerifyHostname("policygen.example") != nil {
			t.Fatal("certificate not reissued for the new host")
		}
	})
	t.Run("garbage in the Secret is replaced", func(t *testing.T) {
		secret, err := cs.CoreV1().Secrets("podwall-system").Get(ctx, "certs-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret.Data = map[string][]byte{KeyCABundle: []byte("junk"), KeyCert: []byte("-----BEGIN CERTIFICATE-----\n")}
		if _, err := cs.CoreV1().Secrets("podwall-system").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		state(m)
	})
	t.Run("replicas racing agree on one certificate", func(t *testing.T) {
		o := opts
		o.Secret, o.Publish = "certs-race", nil
		a, b := NewManager(cs, o, testr.New(t)), NewManager(cs, o, testr.New(t))
		var wg sync.WaitGroup
		for _, m := range []*Manager{a, b} {
			wg.Go(func() { _, _ = m.Ensure(ctx) }) // the loser's error is retried below, as Run would
		}
		wg.Wait()
		for _, m := range []*Manager{a, b} {
			if _, err := m.Ensure(ctx); err != nil {
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
