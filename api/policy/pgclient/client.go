// Package pgclient is the sidecar's side of policygen's policy API (api/policy/API.md): it long-polls
// the workload's resolved policy and hands each new revision to the datapath, and it delivers the
// connections the sidecar observed. It keeps no state the datapath needs: when policygen is away the
// sidecar goes on enforcing what it holds, and the client reconnects with jittered backoff, saying so
// once rather than once per attempt.
package pgclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/version"
)

// Options configure a Client; zero values take the defaults in parentheses.
type Options struct {
	// URL is policygen's policy API, https://host:port.
	URL string
	// TokenFile holds the projected service-account token (audience podwall); it is re-read for every
	// request because the kubelet rotates it.
	TokenFile string
	// CA is the PEM bundle that verifies policygen's certificate; empty uses the system roots.
	CA []byte
	// Mark is set as SO_MARK on every socket the client opens, DNS lookups included, so that the
	// ruleset lets the sidecar reach policygen even under deny-all (ruleset.MarkSelf). 0 sets none.
	Mark uint32
	// BeforeConnect, if set, is called before each socket the client opens, DNS lookups included,
	// connects, with the resolved network and address ("tcp4", "10.96.0.7:443"; "udp6",
	// "[fd00::a]:53"); an error aborts that dial. The sidecar lets exactly these destinations through
	// its ruleset under Mark.
	BeforeConnect func(network, address string) error
	// Transport, if set, carries every request instead of one built from CA, Mark and
	// BeforeConnect, for callers that share connections or choose where they go.
	Transport http.RoundTripper
	// Wait is how long policygen may hold a long-poll (30s).
	Wait time.Duration
	// ReportInterval is how often reports are sent (10s; policygen accepts one per 5s per pod).
	ReportInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts (1s, 30s).
	MinBackoff, MaxBackoff time.Duration
	// Registerer receives the client's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Version is sent in policy.HeaderVersion on every request (this binary's, version.Version).
	Version string
	// Guard, if set, is called before every request for the policy.HeaderGuard it carries.
	Guard func() policy.Guard
}

func (o *Options) setDefaults() {
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.Wait == 0 {
		o.Wait = 30 * time.Second
	}
	if o.ReportInterval == 0 {
		o.ReportInterval = 10 * time.Second
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MinBackoff = min(o.MinBackoff, o.MaxBackoff) // the cap holds from the first attempt on
}

// Client talks to policygen.
type Client struct {
	opts Options
	http *http.Client
	log  logr.Logger
	// backoff is copied by each retrying loop and stepped at each failure: attempt n waits between
	// half and all of MinBackoff·2ⁿ, capped at MaxBackoff, so that the sidecars of a large deployment
	// do not come back in step.
	backoff wait.Backoff

	// reachable is the last known state, so that a change of state is logged once.
	reachable atomic.Bool
	connected prometheus.Gauge
	failures  *prometheus.CounterVec
}

// New builds a client. It fails on a malformed URL or an unreadable CA bundle; policygen being down is
// not an error here.
func New(o Options, log logr.Logger) (*Client, error) {
	o.setDefaults()
	if !strings.HasPrefix(o.URL, "https://") {
		return nil, fmt.Errorf("policygen url %q: want https://", o.URL)
	}
	o.URL = strings.TrimSuffix(o.URL, "/")
	transport := o.Transport
	if transport == nil {
		var err error
		if transport, err = newTransport(o); err != nil {
			return nil, err
		}
	}
	// Jitter 1 adds up to the step again, so halving both bounds gives half to all of min·2ⁿ.
	c := &Client{opts: o, http: &http.Client{Transport: transport}, log: log, backoff: wait.Backoff{
		Duration: o.MinBackoff / 2, Factor: 2, Jitter: 1, Steps: math.MaxInt, Cap: o.MaxBackoff / 2,
	}}
	c.reachable.Store(true) // the first failure is news
	c.connected = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podwall_policygen_connected", Help: "1 while the last request to policygen succeeded.",
	})
	c.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_policygen_failures_total", Help: "Failed requests to policygen, by endpoint.",
	}, []string{"endpoint"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(c.connected, c.failures)
	}
	return c, nil
}

// newTransport builds the sidecar's transport: policygen verified against CA, sockets marked.
func newTransport(o Options) (*http.Transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CA) {
			return nil, errors.New("policygen CA: no PEM certificate in it")
		}
		tlsConf.RootCAs = pool
	}
	return &http.Transport{
		DialContext:           dialer(o).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: o.Wait + 15*time.Second,
		IdleConnTimeout:       o.Wait + time.Minute,
		MaxIdleConnsPerHost:   2,
	}, nil
}

// dialer returns a dialer whose sockets, and whose resolver's sockets, carry SO_MARK o.Mark and are
// announced to o.BeforeConnect. A dialer's Control runs after the address is resolved and before the
// socket connects, for the resolver's sockets as for the client's own.
func dialer(o Options) *net.Dialer {
	control := func(network, address string, rc syscall.RawConn) error {
		if o.BeforeConnect != nil {
			if err := o.BeforeConnect(network, address); err != nil {
				return err
			}
		}
		if o.Mark == 0 {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark))
		}); err != nil {
			return err
		}
		return serr
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: control}
	d.Resolver = &net.Resolver{PreferGo: true, Dial: (&net.Dialer{Timeout: 5 * time.Second, Control: control}).DialContext}
	return d
}

// request sends one authenticated request.
func (c *Client) request(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	token, err := os.ReadFile(c.opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.opts.URL+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set(policy.HeaderVersion, c.opts.Version)
	if c.opts.Guard != nil {
		req.Header.Set(policy.HeaderGuard, c.opts.Guard().String())
	}
	return c.http.Do(req)
}

// succeeded and failed track reachability, logging only changes of state.
func (c *Client) succeeded() {
	c.connected.Set(1)
	if !c.reachable.Swap(true) {
		c.log.Info("policygen reachable again")
	}
}

func (c *Client) failed(endpoint string, err error, holding int64) {
	c.connected.Set(0)
	c.failures.WithLabelValues(endpoint).Inc()
	if c.reachable.Swap(false) {
		c.log.Error(err, "policygen unreachable; enforcing the policy held until it is back", "revision", holding)
	}
}

// sleep waits d or until ctx ends, and says whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// apiError is policygen's error body, or the status when there is none.
func apiError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
}
