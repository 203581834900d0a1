package injector

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// caValidity is the CA's lifetime. It is renewed once a serving certificate issued now could outlive it.
const caValidity = 10 * 365 * 24 * time.Hour

// certBundle is the content of the certificate Secret, with the parsed certificates.
type certBundle struct {
	caBundle, caKeyPEM, certPEM, keyPEM []byte
	ca                                  *x509.Certificate
	caKey                               crypto.Signer
	leaf                                *x509.Certificate
}

// bundle returns a bundle that is good now: the one in data if it is, else one with a new serving
// certificate and, when the CA is missing, broken or near its end, a new CA. changed says whether it
// differs from data.
func (k *CertKeeper) bundle(data map[string][]byte) (*certBundle, bool, error) {
	now := k.now()
	b, caOK := parseCA(data, now.Add(k.opts.Validity+k.opts.RenewBefore))
	if !caOK {
		var err error
		if b, err = newCA(now, data[keyCABundle]); err != nil {
			return nil, false, err
		}
	} else if leaf, ok := k.usableLeaf(b, data, now); ok {
		b.certPEM, b.keyPEM, b.leaf = data[keyCert], data[keyKey], leaf
		return b, false, nil
	}
	if err := k.issue(b, now); err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// parseCA reads the CA (the first certificate of the bundle) and its key; ok is false unless they
// match, form a CA and last beyond until.
func parseCA(data map[string][]byte, until time.Time) (*certBundle, bool) {
	block, _ := pem.Decode(data[keyCABundle])
	if block == nil {
		return nil, false
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(block), data[keyCAKey])
	if err != nil {
		return nil, false
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	signer, isSigner := pair.PrivateKey.(crypto.Signer)
	if err != nil || !isSigner || !ca.IsCA || until.After(ca.NotAfter) {
		return nil, false
	}
	return &certBundle{caBundle: data[keyCABundle], caKeyPEM: data[keyCAKey], ca: ca, caKey: signer}, true
}

// usableLeaf returns the stored serving certificate if it matches its key, was signed by the CA,
// names every host and is not yet due for renewal.
func (k *CertKeeper) usableLeaf(b *certBundle, data map[string][]byte, now time.Time) (*x509.Certificate, bool) {
	pair, err := tls.X509KeyPair(data[keyCert], data[keyKey])
	if err != nil {
		return nil, false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || leaf.CheckSignatureFrom(b.ca) != nil || now.After(leaf.NotAfter.Add(-k.opts.RenewBefore)) {
		return nil, false
	}
	for _, h := range k.opts.Hosts {
		if leaf.VerifyHostname(h) != nil {
			return nil, false
		}
	}
	return leaf, true
}

// newCA creates a CA; the bundle keeps the earlier CAs of old that are still valid.
func newCA(now time.Time, old []byte) (*certBundle, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "podwall-injector-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	ca, caPEM, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	bundle := caPEM
	for rest := old; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && now.Before(c.NotAfter) {
			bundle = append(bundle, pem.EncodeToMemory(block)...)
		}
	}
	return &certBundle{caBundle: bundle, caKeyPEM: keyPEM, ca: ca, caKey: key}, nil
}

// issue signs a new serving certificate for the hosts with b's CA.
func (k *CertKeeper) issue(b *certBundle, now time.Time) error {
	key, keyPEM, err := newKey()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: k.opts.Hosts[0]},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(k.opts.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range k.opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf, certPEM, err := sign(tmpl, b.ca, key.Public(), b.caKey)
	if err != nil {
		return fmt.Errorf("issue serving certificate: %w", err)
	}
	b.leaf, b.certPEM, b.keyPEM = leaf, certPEM, keyPEM
	return nil
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
