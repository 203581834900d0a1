// Package serving maps the serving-certificate keys that the injector and policygen share (package
// config) onto the certificate source both serve through (package internal/certs).
package serving

import (
	"podwall.io/podwall/config"
	"podwall.io/podwall/internal/certs"
)

// Options is t for a server in namespace.
func Options(t config.ServingTLS, namespace string) certs.Serving {
	return certs.Serving{
		External:    t.Mode == config.CertExternal,
		CertDir:     t.CertDir,
		Namespace:   namespace,
		Service:     t.Service,
		Secret:      t.Secret,
		ExtraHosts:  t.ExtraHosts,
		Validity:    t.Validity,
		RenewBefore: t.RenewBefore,
	}
}
