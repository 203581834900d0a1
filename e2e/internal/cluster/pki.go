package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"time"

	"podwall.io/podwall/internal/certs"
)

// validity of every certificate of the throwaway cluster, its CA's included.
const validity = 7 * 24 * time.Hour

// pki holds the files of the cluster's one certificate authority: the API server's serving
// certificate, one client certificate in group system:masters that every component and the tests
// use (a throwaway single-node cluster needs no finer identities), and the service-account signing
// key, which makes projected tokens and TokenReview work.
type pki struct {
	CA, ServingCert, ServingKey, ClientCert, ClientKey, SAKey, SAPub string

	ca *certs.KeyPair
}

func newPKI(dir string, hostIP net.IP, serviceIP net.IP) (pki, error) {
	p := pki{
		CA: filepath.Join(dir, "ca.crt"), ServingCert: filepath.Join(dir, "apiserver.crt"),
		ServingKey: filepath.Join(dir, "apiserver.key"), ClientCert: filepath.Join(dir, "admin.crt"),
		ClientKey: filepath.Join(dir, "admin.key"), SAKey: filepath.Join(dir, "sa.key"), SAPub: filepath.Join(dir, "sa.pub"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	now := time.Now()
	ca, err := certs.NewCA("podwall-e2e-ca", now, validity)
	if err != nil {
		return p, err
	}
	p.ca = ca
	if err := os.WriteFile(p.CA, ca.CertPEM(), 0o600); err != nil {
		return p, err
	}
	for _, c := range []struct {
		req       certs.Request
		cert, key string
	}{
		{certs.Request{
			CommonName: "kube-apiserver",
			Hosts: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
				"127.0.0.1", hostIP.String(), serviceIP.String()},
		}, p.ServingCert, p.ServingKey},
		{certs.Request{CommonName: "podwall-e2e-admin", Organization: []string{"system:masters"}, Client: true}, p.ClientCert, p.ClientKey},
	} {
		c.req.Now, c.req.Validity = now, validity
		pair, err := ca.Issue(c.req)
		if err != nil {
			return p, err
		}
		if err := writeKeyPair(pair, c.cert, c.key); err != nil {
			return p, err
		}
	}
	saKey, err := certs.NewKey()
	if err != nil {
		return p, err
	}
	keyPEM, err := certs.EncodeKey(saKey)
	if err != nil {
		return p, err
	}
	if err := os.WriteFile(p.SAKey, keyPEM, 0o600); err != nil {
		return p, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return p, err
	}
	return p, os.WriteFile(p.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

func writeKeyPair(pair *certs.KeyPair, certFile, keyFile string) error {
	keyPEM, err := pair.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pair.CertPEM(), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, keyPEM, 0o600)
}
