package plugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/rest"

	"podwall.io/podwall/internal/certs"
)

// seen is what the backend received.
type seen struct {
	Method, Path, Host, Authorization, Cookie, Origin string
}

// backend is an HTTPS server with a certificate for hosts, issued by its own CA, that answers every
// request with what it received; calls counts them.
func backend(t *testing.T, hosts ...string) (addr string, ca *x509.CertPool, calls *atomic.Int32) {
	t.Helper()
	authority, err := certs.NewCA("test ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := authority.Issue(certs.Request{Hosts: hosts, Now: time.Now(), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	calls = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_ = json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.Path, Host: r.Host,
			Authorization: r.Header.Get("Authorization"), Cookie: r.Header.Get("Cookie"), Origin: r.Header.Get("Origin")})
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes TestProxyVerifiesPolicygen fails
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca = x509.NewCertPool()
	ca.AddCert(authority.Cert)
	return srv.Listener.Addr().String(), ca, calls
}

// proxyTo serves newProxy in front of the backend at addr, verified against ca for policygen's name
// in podwall-system, signed in with token through the kubeconfig path.
func proxyTo(t *testing.T, addr string, ca *x509.CertPool, token string) *httptest.Server {
	t.Helper()
	base := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: ca, ServerName: serverName("podwall-system")},
	}
	t.Cleanup(base.CloseIdleConnections)
	rt, err := withKubeconfig(&rest.Config{BearerToken: token}, base)
	if err != nil {
		t.Fatal(err)
	}
	p := httptest.NewServer(newProxy(rt, serverName("podwall-system"), io.Discard))
	t.Cleanup(p.Close)
	return p
}

func TestProxy(t *testing.T) {
	addr, ca, calls := backend(t, certs.Serving{Namespace: "podwall-system", Service: serviceName}.Hosts()...)
	p := proxyTo(t, addr, ca, "the-users-token")
	host := strings.TrimPrefix(p.URL, "http://")
	_, port, _ := net.SplitHostPort(host)
	localhost := "localhost:" + port
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name, method, path, host string
		header                   map[string]string
		wantCode                 int
		want                     *seen // nil: the backend is not called
	}{
		{name: "the page, the browser's token and cookies dropped", method: "GET", path: "/ui/",
			header:   map[string]string{"Authorization": "Bearer pasted-in-the-ui", "Cookie": "other-app=secret"},
			wantCode: http.StatusOK, want: &seen{Method: "GET", Path: "/ui/", Host: host, Authorization: "Bearer the-users-token"}},
		{name: "an API call", method: "GET", path: "/ui/api/workloads", wantCode: http.StatusOK,
			want: &seen{Method: "GET", Path: "/ui/api/workloads", Host: host, Authorization: "Bearer the-users-token"}},
		{name: "a write from the proxy's own origin reaches policygen as its https origin", method: "POST",
			path: "/ui/api/policies/shop/web/mode", header: map[string]string{"Origin": "http://" + host}, wantCode: http.StatusOK,
			want: &seen{Method: "POST", Path: "/ui/api/policies/shop/web/mode", Host: host, Authorization: "Bearer the-users-token", Origin: "https://" + host}},
		{name: "a write from another origin is passed on as it came, for policygen to refuse", method: "POST",
			path: "/ui/api/policies/shop/web/mode", header: map[string]string{"Origin": "http://evil.example"}, wantCode: http.StatusOK,
			want: &seen{Method: "POST", Path: "/ui/api/policies/shop/web/mode", Host: host, Authorization: "Bearer the-users-token", Origin: "http://evil.example"}},
		{name: "the root redirects to the UI", method: "GET", path: "/", wantCode: http.StatusFound},
		{name: "the sidecars' policy API is not proxied", method: "GET", path: "/v1/policy", wantCode: http.StatusNotFound},
		{name: "nor a path that climbs out of /ui/ (redirected to its clean form)", method: "GET", path: "/ui/../v1/policy", wantCode: http.StatusTemporaryRedirect},
		{name: "a rebound DNS name is refused", method: "GET", path: "/ui/api/workloads", host: "evil.example", wantCode: http.StatusMisdirectedRequest},
		{name: "localhost is served", method: "GET", path: "/ui/api/workloads", host: localhost, wantCode: http.StatusOK,
			want: &seen{Method: "GET", Path: "/ui/api/workloads", Host: localhost, Authorization: "Bearer the-users-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := calls.Load()
			req, err := http.NewRequest(tt.method, p.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = tt.path // keep the path as sent, dots included
			if tt.host != "" {
				req.Host = tt.host
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.wantCode)
			}
			if tt.want == nil {
				if n := calls.Load() - before; n != 0 {
					t.Errorf("the backend was called %d times, want none", n)
				}
				return
			}
			var got seen
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(*tt.want, got); d != "" {
				t.Errorf("the backend saw (-want +got):\n%s", d)
			}
		})
	}
}

// TestProxyVerifiesPolicygen: a server whose certificate does not carry policygen's name, or is not
// signed by the CA policygen published, never receives the token.
func TestProxyVerifiesPolicygen(t *testing.T) {
	addr, _, calls := backend(t, serverName("podwall-system"))
	_, otherCA, _ := backend(t, serverName("podwall-system"))
	wrongName, ca, wrongNameCalls := backend(t, "podwall-policygen.elsewhere.svc")
	for name, p := range map[string]*httptest.Server{
		"another CA":   proxyTo(t, addr, otherCA, "the-users-token"),
		"another name": proxyTo(t, wrongName, ca, "the-users-token"),
	} {
		resp, err := http.Get(p.URL + "/ui/api/workloads")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "certificate") {
			t.Errorf("%s: %s %s, want 502 naming the certificate", name, resp.Status, body)
		}
	}
	if calls.Load()+wrongNameCalls.Load() != 0 {
		t.Error("a server that is not policygen was sent a request")
	}
}

func TestLiteralHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8001": true, "127.0.0.1": true, "[::1]:8001": true, "::1": true, "localhost:8001": true,
		"LOCALHOST": true, "10.0.0.7:80": true, "evil.example:8001": false, "evil.example": false,
		"localhost.evil.example:8001": false, "": false, "127.0.0.1.nip.io:8001": false,
	} {
		if got := literalHost(host); got != want {
			t.Errorf("literalHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestKubeconfigCredentials(t *testing.T) {
	for name, tt := range map[string]struct {
		cfg  rest.Config
		want string
	}{
		"a client certificate alone": {rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: []byte("x"), KeyData: []byte("y")}}, errClientCertOnly.Error()},
		"no credentials":             {rest.Config{}, "no token"},
		"impersonation":              {rest.Config{BearerToken: "t", Impersonate: rest.ImpersonationConfig{UserName: "alice"}}, "impersonated"},
	} {
		_, err := withKubeconfig(&tt.cfg, http.DefaultTransport)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--service-account") {
			t.Errorf("%s: %v, want an error saying %q and to pass --service-account", name, err, tt.want)
		}
	}
	// An exec plugin may answer with a client certificate and no token: nothing is sent then.
	_, err := requireToken{http.DefaultTransport}.RoundTrip(httptest.NewRequest("GET", "https://policygen/ui/", nil))
	if !errors.Is(err, errClientCertOnly) {
		t.Errorf("a request without a token: %v, want errClientCertOnly", err)
	}
}
