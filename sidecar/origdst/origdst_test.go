package origdst

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"podwall.io/podwall/internal/netnstest"
)

// TestOriginalBehindRedirect redirects a connection to a remote peer onto a local "proxy" port the way
// istio-init does, and recovers the remote from the proxy's side of the connection.
func TestOriginalBehindRedirect(t *testing.T) {
	pod, peer := netnstest.New(t), netnstest.New(t)
	_, remote := netnstest.Pair(t, pod, peer)
	pod.Exec(t, "nft", "add table ip nat; add chain ip nat output { type nat hook output priority -100; }; "+
		"add rule ip nat output tcp dport 8080 redirect to :15001")
	proxy := pod.Listen(t, "tcp", "0.0.0.0:15001")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := proxy.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	want := netip.AddrPortFrom(remote.Addr.Addr(), 8080)
	client, err := pod.Dial("tcp", want.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()

	table, err := Open(pod.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	src := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst := server.LocalAddr().(*net.TCPAddr).AddrPort()
	got, err := table.Original(6, unmap(src), unmap(dst))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("original destination %s, want %s", got, want)
	}

	_, err = table.Original(6, unmap(src), netip.AddrPortFrom(dst.Addr().Unmap(), 1))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of an unknown connection: %v, want ErrNotFound", err)
	}
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
