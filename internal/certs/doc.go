// Package certs is podwall's one way to make and keep X.509 certificates, used by every binary and
// test: a self-signed CA, certificates it signs for DNS names and IP addresses, their PEM encoding,
// the check that says when a certificate must be renewed, and a Manager that keeps a CA and serving
// certificate in a Secret shared by a server's replicas.
//
// Every key is ECDSA on P-256 and every private key is written as PKCS #8 ("PRIVATE KEY"), which Go's
// crypto/tls and all Kubernetes components read. Certificates start an hour before they are made, so
// that a peer whose clock is a little behind accepts them at once.
package certs
