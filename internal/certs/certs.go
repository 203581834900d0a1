package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// backdate is how long before its making a certificate becomes valid, for clock skew between peers.
const backdate = time.Hour

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Request describes a certificate for Issue.
type Request struct {
	// CommonName of the subject; default the first host.
	CommonName string
	// Organization of the subject; Kubernetes reads it as the client's groups.
	Organization []string
	// Hosts are the DNS names and IP addresses the certificate is for.
	Hosts []string
	// Client makes a client certificate; the default is a serving certificate.
	Client bool
	// Now is the time of issue and Validity how long from then the certificate lasts.
	Now      time.Time
	Validity time.Duration
}

// NewKey generates a private key of the one kind podwall uses.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// NewCA creates a self-signed CA that lasts validity from now.
func NewCA(commonName string, now time.Time, validity time.Duration) (*KeyPair, error) {
	return create(&x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

// Issue creates a key and a certificate for it signed by the CA ca.
func (ca *KeyPair) Issue(r Request) (*KeyPair, error) {
	usage := x509.ExtKeyUsageServerAuth
	if r.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: r.CommonName, Organization: r.Organization},
		NotBefore:   r.Now.Add(-backdate),
		NotAfter:    r.Now.Add(r.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if tmpl.Subject.CommonName == "" && len(r.Hosts) > 0 {
		tmpl.Subject.CommonName = r.Hosts[0]
	}
	for _, h := range r.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return create(tmpl, ca)
}

// create makes a key and a certificate of it from tmpl, signed by parent or, when parent is nil, by
// itself.
func create(tmpl *x509.Certificate, parent *KeyPair) (*KeyPair, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM is the certificate as a PEM block.
func (p *KeyPair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})
}

// KeyPEM is the private key as a PEM block (see EncodeKey).
func (p *KeyPair) KeyPEM() ([]byte, error) { return EncodeKey(p.Key) }

// TLSCertificate is the pair as crypto/tls serves it.
func (p *KeyPair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
}

// EncodeKey returns key as a PKCS #8 PEM block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPair reads the first certificate of certPEM (a bundle may follow it) and the private key of
// keyPEM, which must belong to that certificate.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", pair.PrivateKey)
	}
	return &KeyPair{Cert: pair.Leaf, Key: signer}, nil
}

// Want is what a certificate must meet to be kept rather than renewed.
type Want struct {
	// Until is when it must still be valid: now plus the renewal window.
	Until time.Time
	// CA, when set, must have signed it.
	CA *x509.Certificate
	// Hosts are DNS names and IP addresses it must name.
	Hosts []string
	// IsCA asks for a CA certificate.
	IsCA bool
}

// Check returns why cert falls short of want, and so must be renewed, or nil when it can stay.
func Check(cert *x509.Certificate, want Want) error {
	if want.IsCA && !cert.IsCA {
		return errors.New("not a CA")
	}
	if want.Until.After(cert.NotAfter) {
		return fmt.Errorf("expires at %v, before %v", cert.NotAfter, want.Until)
	}
	if want.CA != nil {
		if err := cert.CheckSignatureFrom(want.CA); err != nil {
			return fmt.Errorf("not signed by the CA: %w", err)
		}
	}
	for _, h := range want.Hosts {
		if err := cert.VerifyHostname(h); err != nil {
			return err
		}
	}
	return nil
}
