package policyapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Start serves the API until ctx ends; it runs on every replica (NeedLeaderElection), so that losing
// one replica loses no sidecar's policy.
func (s *Server) Start(ctx context.Context) error {
	go func() {
		if err := s.opts.Cert.Keep(ctx); err != nil {
			s.log.Error(err, "keep serving certificate")
		}
	}()
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ctx, tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.opts.Cert.GetCertificate}))
}

// Serve serves the API on ln (already TLS) until ctx ends, then lets requests finish for a few seconds;
// parked long-polls end at once with 304 so that their sidecars reconnect elsewhere.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.opts.MaxWait + 30*time.Second,
		IdleTimeout:       s.opts.MaxWait + time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	tracked := make(chan struct{})
	go func() {
		defer close(tracked)
		s.sidecars.run(ctx, s.opts.StatusInterval, s.opts.MaxWait+s.opts.StatusInterval, s.opts.StatusTTL)
	}()
	defer func() { <-tracked }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve policy API: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down policy API: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }
