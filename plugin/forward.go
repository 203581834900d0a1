package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// forwarder keeps a port-forward to a Ready policygen pod, as `kubectl port-forward` makes one, and
// makes another to a Ready pod when the pod goes away. Dial connects through the current one.
type forwarder struct {
	cfg    *rest.Config
	cs     kubernetes.Interface
	ns     string
	errOut io.Writer
	local  atomic.Pointer[string] // 127.0.0.1:port of the current port-forward, nil between two
}

// start makes the first port-forward, so that a missing permission or pod fails the command, and
// keeps one until ctx ends; the returned channel says when the last one has closed.
func (f *forwarder) start(ctx context.Context) (<-chan struct{}, error) {
	lost, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.keep(ctx, lost)
	}()
	return done, nil
}

// keep waits for the port-forward to be lost and makes a new one, backing off while none can be made.
func (f *forwarder) keep(ctx context.Context, lost <-chan error) {
	backoff := reforwardBackoff()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-lost:
			f.local.Store(nil)
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(f.errOut, "lost the port-forward to policygen (%v); making another\n", err)
		}
		for {
			var err error
			if lost, err = f.forward(ctx); err == nil {
				backoff = reforwardBackoff()
				break
			}
			fmt.Fprintf(f.errOut, "port-forward to policygen: %v\n", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff.Step()):
			}
		}
	}
}

// reforwardBackoff spaces the attempts to make a new port-forward: from half a second up to 15.
func reforwardBackoff() wait.Backoff {
	return wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 15 * time.Second}
}

// forward picks a Ready policygen pod and port-forwards a free local port to its API port; the
// channel receives ForwardPorts' answer once the port-forward has ended.
func (f *forwarder) forward(ctx context.Context) (<-chan error, error) {
	t, err := findPolicygen(ctx, f.cs, f.ns)
	if err != nil {
		return nil, err
	}
	dialer, err := f.dialer(t.pod)
	if err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreamingWithContext(ctx, dialer, []string{"127.0.0.1"},
		[]string{"0:" + strconv.Itoa(int(t.port))}, ready, io.Discard, f.errOut)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.ns, t.pod, err)
	}
	lost := make(chan error, 1)
	go func() { lost <- pf.ForwardPorts() }()
	select {
	case err := <-lost:
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.ns, t.pod, err)
	case <-ready:
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		pf.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: no local port: %v", f.ns, t.pod, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
	f.local.Store(&addr)
	fmt.Fprintf(f.errOut, "forwarding to policygen pod %s/%s\n", f.ns, t.pod)
	return lost, nil
}

// dialer opens the pod's portforward subresource as kubectl does: SPDY over WebSocket, falling back
// to plain SPDY where the API server or a proxy in between does not upgrade to WebSocket.
func (f *forwarder) dialer(pod string) (httpstream.Dialer, error) {
	u := f.cs.CoreV1().RESTClient().Post().Namespace(f.ns).Resource("pods").Name(pod).SubResource("portforward").URL()
	rt, upgrader, err := spdy.RoundTripperFor(f.cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward transport: %w", err)
	}
	viaSPDY := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	viaWebSocket, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, f.cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward transport: %w", err)
	}
	return portforward.NewFallbackDialerForStreaming(viaWebSocket, viaSPDY, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	}), nil
}

// errNoForward is a request made while no port-forward is up.
var errNoForward = errors.New("no port-forward to policygen now: making another, retry in a moment")

// Dial connects to policygen through the current port-forward (for http.Transport.DialContext).
func (f *forwarder) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	addr := f.local.Load()
	if addr == nil {
		return nil, errNoForward
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", *addr)
}
