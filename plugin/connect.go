package plugin

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// policygenFlags are the flags of the commands that speak to policygen's UI API: where podwall is
// installed and whom to sign in as.
type policygenFlags struct {
	podwallNamespace string
	serviceAccount   string
	tokenTTL         time.Duration
}

func (p *policygenFlags) addFlags(f *pflag.FlagSet) {
	f.StringVar(&p.podwallNamespace, "podwall-namespace", "podwall-system", "namespace podwall is installed in")
	f.StringVar(&p.serviceAccount, "service-account", "", "sign in to policygen as this ServiceAccount of -n's namespace, with tokens minted by TokenRequest (default: your kubeconfig's credentials)")
	f.DurationVar(&p.tokenTTL, "token-ttl", minTokenTTL, "how long each ServiceAccount token is valid (at least 10m); a new one is minted before it expires")
}

// validate checks the flags that need no cluster.
func (p *policygenFlags) validate() error {
	if p.tokenTTL < minTokenTTL {
		return fmt.Errorf("--token-ttl %s is shorter than the 10m the API server issues at least", p.tokenTTL)
	}
	return nil
}

// kubeClients are the user's kubeconfig, its namespace (-n) and a clientset of it.
type kubeClients struct {
	cfg *rest.Config
	ns  string
	cs  kubernetes.Interface
}

func newKubeClients(kube *genericclioptions.ConfigFlags) (kubeClients, error) {
	cfg, err := kube.ToRESTConfig()
	if err != nil {
		return kubeClients{}, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return kubeClients{}, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return kubeClients{}, fmt.Errorf("kubeconfig: %w", err)
	}
	return kubeClients{cfg: cfg, ns: ns, cs: cs}, nil
}

// policygenConn is a way to policygen's HTTPS API through a port-forward, verified against
// policygen's CA and carrying the user's token; close ends the port-forward.
type policygenConn struct {
	rt     http.RoundTripper
	server string
	close  func()
}

// connect checks the permissions that command needs, then port-forwards to a Ready policygen pod
// and returns the connection.
func (p *policygenFlags) connect(ctx context.Context, k kubeClients, command string, streams genericiooptions.IOStreams) (*policygenConn, error) {
	needs := []access{{verb: "create", resource: "pods", subresource: "portforward", namespace: p.podwallNamespace}}
	if p.serviceAccount != "" {
		needs = append(needs, access{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: k.ns, name: p.serviceAccount})
	}
	if err := mayAll(ctx, k.cs, command, needs...); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	fwd := &forwarder{cfg: k.cfg, cs: k.cs, ns: p.podwallNamespace, errOut: streams.ErrOut}
	// Credentials first, so that a kubeconfig they cannot come from fails before any port-forward;
	// the TLS settings follow once policygen's CA is read, before the first request.
	base := &http.Transport{DialContext: fwd.Dial, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second}
	rt, err := p.credentials(ctx, k, base)
	if err != nil {
		cancel()
		return nil, err
	}
	forwarding, err := fwd.start(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	closeAll := func() { cancel(); <-forwarding; base.CloseIdleConnections() }
	pool, err := policygenCA(ctx, k.cs, p.podwallNamespace)
	if err != nil {
		closeAll()
		return nil, err
	}
	server := serverName(p.podwallNamespace)
	base.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: server, MinVersion: tls.VersionTLS12}
	return &policygenConn{rt: rt, server: server, close: closeAll}, nil
}

// credentials wraps base to add the token policygen is signed in to with: the ServiceAccount's, or
// the kubeconfig's.
func (p *policygenFlags) credentials(ctx context.Context, k kubeClients, base http.RoundTripper) (http.RoundTripper, error) {
	if p.serviceAccount != "" {
		return withServiceAccount(ctx, k.cs, k.ns, p.serviceAccount, p.tokenTTL, base)
	}
	return withKubeconfig(k.cfg, base)
}
