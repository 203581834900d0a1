package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// errClientCertOnly is a kubeconfig whose user signs in with a client certificate alone: the
// certificate's key proves who they are to the API server, and the proxy cannot pass that on.
var errClientCertOnly = errors.New("your kubeconfig signs in with a client certificate, which cannot be forwarded to policygen: pass --service-account NAME to sign in to the UI as a ServiceAccount of -n's namespace")

// serviceAccountTokens mints tokens for the ServiceAccount ns/name (TokenRequest, no audience: the
// API server's own, which the UI's TokenReview asks for), each valid for ttl.
type serviceAccountTokens struct {
	ctx      context.Context
	cs       kubernetes.Interface
	ns, name string
	ttl      time.Duration
}

// Token mints a new token (oauth2.TokenSource).
func (s serviceAccountTokens) Token() (*oauth2.Token, error) {
	seconds := int64(s.ttl / time.Second)
	tr, err := s.cs.CoreV1().ServiceAccounts(s.ns).CreateToken(s.ctx, s.name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s has no ServiceAccount %s", s.ns, s.name)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("your Kubernetes permissions do not let you %s: %w",
			access{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: s.ns, name: s.name}, err)
	case err != nil:
		return nil, fmt.Errorf("request a token for ServiceAccount %s/%s: %w", s.ns, s.name, err)
	}
	return &oauth2.Token{AccessToken: tr.Status.Token, TokenType: "Bearer", Expiry: tr.Status.ExpirationTimestamp.Time}, nil
}

// minTokenTTL is the shortest token the API server issues (TokenRequest refuses less than 10 minutes).
const minTokenTTL = 10 * time.Minute

// withServiceAccount wraps rt to send a token of the ServiceAccount, minted now (so that a missing
// ServiceAccount or permission fails before the URL is printed) and again when a fifth of its life
// is left.
func withServiceAccount(ctx context.Context, cs kubernetes.Interface, ns, name string, ttl time.Duration, rt http.RoundTripper) (http.RoundTripper, error) {
	src := serviceAccountTokens{ctx: ctx, cs: cs, ns: ns, name: name, ttl: ttl}
	first, err := src.Token()
	if err != nil {
		return nil, err
	}
	tokens := oauth2.ReuseTokenSourceWithExpiry(first, src, ttl/5)
	return transport.TokenSourceWrapTransport(tokens)(rt), nil
}

// withKubeconfig wraps rt to send the credentials the user's kubeconfig sends to the API server,
// through client-go's own wrappers so that exec and auth-provider plugins run (and refresh) as they
// do for kubectl. Impersonation (--as) is refused: policygen would act for the real user instead.
func withKubeconfig(cfg *rest.Config, rt http.RoundTripper) (http.RoundTripper, error) {
	if cfg.Impersonate.UserName != "" || cfg.Impersonate.UID != "" || len(cfg.Impersonate.Groups) > 0 {
		return nil, errors.New("policygen cannot act for an impersonated user (--as): pass --service-account NAME to sign in as a ServiceAccount of -n's namespace")
	}
	if cfg.BearerToken == "" && cfg.BearerTokenFile == "" && cfg.ExecProvider == nil && cfg.AuthProvider == nil {
		if cfg.CertData != nil || cfg.CertFile != "" {
			return nil, errClientCertOnly
		}
		return nil, errors.New("your kubeconfig has no token to sign in to policygen with: pass --service-account NAME to sign in as a ServiceAccount of -n's namespace")
	}
	wrapped, err := rest.HTTPWrappersForConfig(cfg, requireToken{rt})
	if err != nil {
		return nil, fmt.Errorf("kubeconfig credentials: %w", err)
	}
	return wrapped, nil
}

// requireToken refuses to send a request that carries no bearer token: an exec plugin may answer
// with a client certificate instead, which cannot be forwarded.
type requireToken struct{ next http.RoundTripper }

func (r requireToken) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, ok := bearer(req.Header.Get("Authorization")); !ok {
		return nil, errClientCertOnly
	}
	return r.next.RoundTrip(req)
}

// bearer returns the token of an Authorization header of the Bearer scheme.
func bearer(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return h[len(prefix):], true
}
