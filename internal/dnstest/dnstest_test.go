package dnstest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// resolver is Go's own resolver, sending every query to s, and the networks it dialed.
func resolver(t *testing.T, s *Server) (*net.Resolver, func() []string) {
	var mu sync.Mutex
	var networks []string
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		mu.Lock()
		networks = append(networks, network)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr().String())
	}}
	return r, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(networks)
	}
}

func start(t *testing.T) *Server {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func lookup(t *testing.T, r *net.Resolver, network, name string) ([]netip.Addr, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, network, name)
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs, err
}

var (
	v4a = netip.MustParseAddr("192.0.2.1")
	v4b = netip.MustParseAddr("192.0.2.2")
	v6  = netip.MustParseAddr("2001:db8::1")
)

func TestServer(t *testing.T) {
	s := start(t)
	r, _ := resolver(t, s)

	s.Set("API.example.com", 60, v4a, v6)
	got, err := lookup(t, r, "ip", "api.example.com.")
	if err != nil || !slices.Equal(got, []netip.Addr{v4a, v6}) {
		t.Fatalf("lookup = %v, %v; want [%v %v]", got, err, v4a, v6)
	}
	if n := s.Queries(); n != 2 {
		t.Errorf("Queries = %d after an A and an AAAA query, want 2", n)
	}

	// The table changes while the server runs.
	s.Set("api.example.com", 60, v4b)
	if got, err := lookup(t, r, "ip4", "api.example.com."); err != nil || !slices.Equal(got, []netip.Addr{v4b}) {
		t.Errorf("after Set: lookup = %v, %v; want [%v]", got, err, v4b)
	}

	s.SetCNAME("www.example.com", "api.example.com", 30)
	if got, err := lookup(t, r, "ip4", "www.example.com."); err != nil || !slices.Equal(got, []netip.Addr{v4b}) {
		t.Errorf("through the CNAME: lookup = %v, %v; want [%v]", got, err, v4b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cname, err := r.LookupCNAME(ctx, "www.example.com."); err != nil || cname != "api.example.com." {
		t.Errorf("LookupCNAME = %q, %v; want api.example.com.", cname, err)
	}

	var dnsErr *net.DNSError
	if _, err := lookup(t, r, "ip4", "unknown.example.com."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("unknown name: err = %v, want NXDOMAIN (not found)", err)
	}
	s.Set("empty.example.com", 60)
	if _, err := lookup(t, r, "ip4", "empty.example.com."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("name without addresses: err = %v, want no addresses", err)
	}
}

// TestServerTCP: an answer too large for UDP comes truncated, and whole over TCP.
func TestServerTCP(t *testing.T) {
	s := start(t)
	r, networks := resolver(t, s)
	var many []netip.Addr
	for i := range 200 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	s.Set("many.example.com", 60, many...)
	got, err := lookup(t, r, "ip4", "many.example.com.")
	if err != nil || !slices.Equal(got, many) {
		t.Fatalf("lookup = %d addresses, %v; want %d", len(got), err, len(many))
	}
	if n := networks(); !slices.Equal(n, []string{"udp", "tcp"}) {
		t.Errorf("dialed %q, want udp then tcp (the UDP answer truncated)", n)
	}
	if n := s.Queries(); n != 2 {
		t.Errorf("Queries = %d, want 2 (UDP, then TCP)", n)
	}
}

func TestClose(t *testing.T) {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A TCP connection left open must not keep Close waiting.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.Close()
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("the server still accepts connections after Close")
	}
}

func TestStartRefusesBadAddress(t *testing.T) {
	if _, err := Start("localhost"); err == nil {
		t.Error("Start(\"localhost\") succeeded")
	}
}

func TestServerBadCNAMETarget(t *testing.T) {
	s := start(t)
	r, _ := resolver(t, s)
	s.SetCNAME("bad.example.com", strings.Repeat("x", 300), 30)
	var dnsErr *net.DNSError
	if _, err := lookup(t, r, "ip4", "bad.example.com."); !errors.As(err, &dnsErr) || dnsErr.IsNotFound {
		t.Errorf("err = %v, want a server failure", err)
	}
}
