package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newCA(t *testing.T, name string) *KeyPair {
	t.Helper()
	ca, err := NewCA(name, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *KeyPair, r Request) *KeyPair {
	t.Helper()
	if r.Now.IsZero() {
		r.Now, r.Validity = now, time.Hour
	}
	p, err := ca.Issue(r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIssueVerifies checks that the chain verifies, with x509.Verify, for every requested name and
// address and for the requested use only.
func TestIssueVerifies(t *testing.T) {
	ca := newCA(t, "test-ca")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tests := []struct {
		name     string
		req      Request
		hosts    []string
		usage    x509.ExtKeyUsage
		wrongUse x509.ExtKeyUsage
		wantCN   string
	}{
		{
			name:  "serving certificate for names and addresses",
			req:   Request{Hosts: []string{"svc.ns.svc", "svc.ns", "127.0.0.1", "::1", "10.96.0.1"}},
			hosts: []string{"svc.ns.svc", "svc.ns", "127.0.0.1", "::1", "10.96.0.1"},
			usage: x509.ExtKeyUsageServerAuth, wrongUse: x509.ExtKeyUsageClientAuth, wantCN: "svc.ns.svc",
		},
		{
			name:  "client certificate with groups",
			req:   Request{CommonName: "admin", Organization: []string{"system:masters"}, Client: true},
			usage: x509.ExtKeyUsageClientAuth, wrongUse: x509.ExtKeyUsageServerAuth, wantCN: "admin",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := issue(t, ca, tt.req).Cert
			opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{tt.usage}}
			if _, err := leaf.Verify(opts); err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.hosts {
				opts.DNSName = h
				if _, err := leaf.Verify(opts); err != nil {
					t.Errorf("host %s: %v", h, err)
				}
			}
			opts.DNSName = "other.example"
			if _, err := leaf.Verify(opts); err == nil {
				t.Error("verifies for a host it does not name")
			}
			opts.DNSName, opts.KeyUsages = "", []x509.ExtKeyUsage{tt.wrongUse}
			if _, err := leaf.Verify(opts); err == nil {
				t.Error("verifies for the other use")
			}
			if leaf.Subject.CommonName != tt.wantCN || !cmp.Equal(leaf.Subject.Organization, tt.req.Organization) {
				t.Errorf("subject %v, want CN %s, O %v", leaf.Subject, tt.wantCN, tt.req.Organization)
			}
			if got, want := leaf.NotBefore, now.Add(-time.Hour); !got.Equal(want) {
				t.Errorf("valid from %v, want %v", got, want)
			}
		})
	}
	t.Run("another CA does not verify it", func(t *testing.T) {
		other := x509.NewCertPool()
		other.AddCert(newCA(t, "other-ca").Cert)
		leaf := issue(t, ca, Request{Hosts: []string{"a.example"}}).Cert
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: other, CurrentTime: now}); err == nil {
			t.Fatal("verified by a CA that did not sign it")
		}
	})
}

// TestCheck covers the reasons to renew: the window, the CA and the names.
func TestCheck(t *testing.T) {
	ca := newCA(t, "test-ca")
	leaf := issue(t, ca, Request{Hosts: []string{"a.example", "10.0.0.1"}, Now: now, Validity: 10 * time.Hour}).Cert
	tests := []struct {
		name  string
		cert  *x509.Certificate
		want  Want
		renew bool
	}{
		{name: "outside the window", cert: leaf, want: Want{Until: now.Add(9 * time.Hour), CA: ca.Cert, Hosts: []string{"a.example", "10.0.0.1"}}},
		{name: "ends exactly at the window's end", cert: leaf, want: Want{Until: now.Add(10 * time.Hour)}},
		{name: "ends within the window", cert: leaf, want: Want{Until: now.Add(10*time.Hour + time.Second)}, renew: true},
		{name: "signed by another CA", cert: leaf, want: Want{Until: now, CA: newCA(t, "other-ca").Cert}, renew: true},
		{name: "a name missing", cert: leaf, want: Want{Until: now, Hosts: []string{"a.example", "b.example"}}, renew: true},
		{name: "an address missing", cert: leaf, want: Want{Until: now, Hosts: []string{"10.0.0.2"}}, renew: true},
		{name: "not a CA", cert: leaf, want: Want{Until: now, IsCA: true}, renew: true},
		{name: "a CA", cert: ca.Cert, want: Want{Until: now, IsCA: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check(tt.cert, tt.want); (err != nil) != tt.renew {
				t.Fatalf("Check = %v, want renewal %v", err, tt.renew)
			}
		})
	}
}

// TestPEMRoundTrip reads back what CertPEM and KeyPEM write, also with a bundle after the certificate,
// and refuses a key of another certificate.
func TestPEMRoundTrip(t *testing.T) {
	ca := newCA(t, "test-ca")
	leaf := issue(t, ca, Request{Hosts: []string{"a.example", "127.0.0.1"}})
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("key is not PKCS #8 PEM: %.40s", keyPEM)
	}
	for name, certPEM := range map[string][]byte{"certificate": leaf.CertPEM(), "with a bundle after it": append(leaf.CertPEM(), ca.CertPEM()...)} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseKeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Cert.Equal(leaf.Cert) {
				t.Error("certificate differs")
			}
			if key, ok := got.Key.(*ecdsa.PrivateKey); !ok || !key.Equal(leaf.Key) {
				t.Error("key differs")
			}
			if diff := cmp.Diff([]net.IP{net.ParseIP("127.0.0.1").To4()}, got.Cert.IPAddresses); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("key of another certificate", func(t *testing.T) {
		caKey, err := ca.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseKeyPair(leaf.CertPEM(), caKey); err == nil {
			t.Fatal("accepted a key that does not match")
		}
	})
	t.Run("TLS certificate", func(t *testing.T) {
		c := leaf.TLSCertificate()
		if !c.Leaf.Equal(leaf.Cert) || len(c.Certificate) != 1 || !bytes.Equal(c.Certificate[0], leaf.Cert.Raw) {
			t.Fatal("TLS certificate is not the leaf")
		}
	})
}
