// Package workload is the test workload of the e2e cluster: one static binary whose subcommands are
// the pause container, an HTTP server, a client that connects in a loop, an in-pod attacker, a ping, a
// long-lived connection, and a small service-mesh pair (a redirecting proxy and the init step that
// installs the redirect, like istio-init). Every subcommand writes one line per event to stdout so
// that tests read what happened with `kubectl logs` (or the CRI log files) instead of trusting timing.
package workload

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Run executes the subcommand named by args[0] until ctx ends or the subcommand fails.
func Run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: workload pause|serve|connect|attack|ping|hold|proxy|redirect [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "pause":
		<-ctx.Done()
		return nil
	case "serve":
		addrs := fs.String("addr", ":8080", "listen addresses, comma-separated")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return serve(ctx, strings.Split(*addrs, ","), out)
	case "connect":
		c := connector{out: out}
		fs.StringVar(&c.url, "url", "", "URL to GET; $VAR and ${VAR} are expanded from the environment")
		fs.DurationVar(&c.interval, "interval", time.Second, "pause between attempts")
		fs.DurationVar(&c.timeout, "timeout", 3*time.Second, "limit of one attempt")
		fs.IntVar(&c.count, "count", 0, "attempts before exiting (0: until stopped)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		c.url = os.ExpandEnv(c.url)
		return c.run(ctx)
	case "attack":
		addr := fs.String("addr", "", "host:port the forged connections go to")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return attack(ctx, *addr, out)
	case "ping":
		addr := fs.String("addr", "", "IPv4 address to ping")
		timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the reply")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return ping(ctx, *addr, *timeout, out)
	case "hold":
		addr := fs.String("addr", "", "host:port of the HTTP server to hold a connection to")
		interval := fs.Duration("interval", 200*time.Millisecond, "pause between requests")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return hold(ctx, *addr, *interval, out)
	case "proxy":
		addr := fs.String("addr", ":15001", "listen address of the redirected outbound connections")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return proxy(ctx, *addr, out)
	case "redirect":
		port := fs.Uint("to-port", 15001, "local port the pod's outgoing TCP is redirected to")
		uid := fs.Uint("proxy-uid", 1337, "user id of the proxy, whose own connections are not redirected")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return redirect(uint16(*port), uint32(*uid), out)
	}
	return fmt.Errorf("unknown subcommand %q", args[0])
}

// serve answers every request on every address with "ok <hostname>" and logs each request's peer
// and local address: a test reads there whether a connection got through.
func serve(ctx context.Context, addrs []string, out io.Writer) error {
	host, _ := os.Hostname()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			local := r.Context().Value(http.LocalAddrContextKey)
			fmt.Fprintf(out, "request from=%s to=%v path=%s\n", r.RemoteAddr, local, r.URL.Path)
			fmt.Fprintf(w, "ok %s\n", host)
		})}
	errs := make(chan error, len(addrs))
	for _, a := range addrs {
		ln, err := listen(ctx, a)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "serving addr=%s\n", a)
		go func() { errs <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		srv.Close()
		return nil
	case err := <-errs:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// connector GETs one URL in a loop. Its first attempt is its first action, which lets a test prove
// that no packet leaves a new pod before the pod's firewall is in place.
type connector struct {
	url      string
	interval time.Duration
	timeout  time.Duration
	count    int
	out      io.Writer
}

func (c connector) run(ctx context.Context) error {
	if c.url == "" {
		return errors.New("connect: -url is required")
	}
	// A fresh connection per attempt: a kept-alive one would be judged only once.
	client := &http.Client{Timeout: c.timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for n := 1; ; n++ {
		start := time.Now()
		resp, err := client.Get(c.url)
		ms := time.Since(start).Milliseconds()
		if err != nil {
			fmt.Fprintf(c.out, "connect fail url=%s ms=%d err=%q\n", c.url, ms, err.Error())
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			fmt.Fprintf(c.out, "connect ok url=%s ms=%d status=%d body=%q\n", c.url, ms, resp.StatusCode,
				strings.TrimSpace(string(body)))
		}
		if n == c.count {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.interval):
		}
	}
}

// listen opens a TCP listener that closes when ctx ends.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	return ln, nil
}
