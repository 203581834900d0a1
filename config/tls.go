package config

import (
	"time"

	"github.com/spf13/pflag"
)

// ServingTLS says where a server's certificate comes from: the injector's webhook and policygen's
// policy API take the same keys.
type ServingTLS struct {
	// Mode is managed (the server keeps its own CA and serving certificate in a Secret, renews it and
	// publishes the CA to its clients) or external (key cert-mode: a mounted certificate, from
	// cert-manager say, read from CertDir and reloaded when it changes).
	Mode CertMode `mapstructure:"cert-mode"`
	// CertDir holds tls.crt and tls.key in external mode (key cert-dir).
	CertDir string `mapstructure:"cert-dir"`
	// Service is the name of the Service in front of the server (key service-name), whose DNS names
	// the managed certificate carries.
	Service string `mapstructure:"service-name"`
	// Secret keeps the CA and serving certificate in managed mode (key secret-name).
	Secret string `mapstructure:"secret-name"`
	// ExtraHosts are more DNS names or IP addresses for the serving certificate (key cert-hosts).
	ExtraHosts []string `mapstructure:"cert-hosts"`
	// Validity is how long a serving certificate lasts (key cert-validity) and RenewBefore how long
	// before its end a new one is issued (key cert-renew-before).
	Validity    time.Duration `mapstructure:"cert-validity"`
	RenewBefore time.Duration `mapstructure:"cert-renew-before"`
}

// CertMode says who provides a server's certificate.
type CertMode string

// The certificate modes.
const (
	// CertManaged: the server creates and renews its CA and certificate itself.
	CertManaged CertMode = "managed"
	// CertExternal: a mounted certificate, and whoever issues it tells the clients its CA.
	CertExternal CertMode = "external"
)

// servingTLSFlags declares the ServingTLS keys with a binary's defaults.
func servingTLSFlags(f *pflag.FlagSet, certDir, service, secret string) {
	f.String("cert-mode", string(CertManaged), "managed (own CA in a Secret, published to clients, renewed) or external (mounted certificate)")
	f.String("cert-dir", certDir, "with cert-mode=external: folder holding tls.crt and tls.key")
	f.String("service-name", service, "the Service in front of the server, named in its certificate")
	f.String("secret-name", secret, "with cert-mode=managed: Secret keeping the CA and certificate")
	f.StringSlice("cert-hosts", nil, "more DNS names or IPs for the serving certificate")
	f.Duration("cert-validity", 365*24*time.Hour, "lifetime of a serving certificate")
	f.Duration("cert-renew-before", 30*24*time.Hour, "renew a certificate this long before it expires")
}

func (t ServingTLS) check(p *problems) {
	oneOf(p, "cert-mode", t.Mode, CertManaged, CertExternal)
	if !IsDNSLabel(t.Service) {
		p.add("service-name", "%q is not a DNS label", t.Service)
	}
	if t.Mode == CertManaged && !IsDNSSubdomain(t.Secret) {
		p.add("secret-name", "%q is not a DNS subdomain name", t.Secret)
	}
	if t.Mode == CertExternal && t.CertDir == "" {
		p.add("cert-dir", "required with cert-mode=external")
	}
	if t.Validity < time.Hour {
		p.add("cert-validity", "%v is under the 1h minimum", t.Validity)
	}
	if t.RenewBefore <= 0 || t.RenewBefore >= t.Validity {
		p.add("cert-renew-before", "%v must be positive and shorter than cert-validity", t.RenewBefore)
	}
}
