// Package netnstest gives root tests their own network namespaces and veth links, and removes them when
// the test ends, so that datapath tests run against the real kernel without touching the host's ruleset.
package netnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podwall.io/podwall/internal/testutil"
)

// NS is a network namespace created for one test.
type NS struct {
	Name string
	fd   int
}

var seq atomic.Int64

// New creates a fresh network namespace with loopback up. It is removed when the test ends. Without root
// the test is skipped, or failed in CI (testutil.RequireRoot).
func New(t testing.TB) *NS {
	t.Helper()
	testutil.RequireRoot(t)
	name := fmt.Sprintf("pwt-%d-%d", os.Getpid(), seq.Add(1))
	mustRun(t, "ip", "netns", "add", name)
	ns := &NS{Name: name, fd: -1}
	t.Cleanup(func() {
		if ns.fd >= 0 {
			unix.Close(ns.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("remove netns %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns.fd = fd
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Fd is an open descriptor of the namespace, for nftables.WithNetNSFd and the like.
func (n *NS) Fd() int { return n.fd }

// Path is the namespace's bind-mount path.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Exec runs a command inside the namespace and returns its combined output; it fails the test on error.
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Command returns an unstarted command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace. Sockets created in fn belong to the namespace
// and may be used from any goroutine afterwards. The thread is discarded when fn returns, since it cannot
// be trusted back in the host namespace.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a stream listener inside the namespace, closed when the test ends.
func (n *NS) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := n.Do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, n.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Serve listens on a TCP address inside the namespace and closes every connection it accepts: a peer
// that is there, for tests that only ask whether a connection gets through. It stops when the test ends.
func (n *NS) Serve(t testing.TB, addr string) net.Listener {
	t.Helper()
	l := n.Listen(t, "tcp", addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// Dial connects from inside the namespace, giving up after timeout.
func (n *NS) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) { c, err = net.DialTimeout(network, addr, timeout); return err })
	return c, err
}

// Link is one end of a veth pair.
type Link struct {
	NS   *NS
	Name string
	Addr netip.Prefix
}

var subnet, hostPairs atomic.Int64

// Pair links two namespaces with a veth pair, addressed from a fresh 10.x/24 and a fresh fd00::/64.
// It returns the a-side and the b-side; removing either namespace removes the pair.
func Pair(t testing.TB, a, b *NS) (Link, Link) {
	t.Helper()
	i := subnet.Add(1)
	x, y := byte(200+(i>>8)%50), byte(i)
	pa := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, x, y, 1}), 24)
	pb := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, x, y, 2}), 24)
	an, bn := fmt.Sprintf("pwa%d", i), fmt.Sprintf("pwb%d", i)
	mustRun(t, "ip", "link", "add", an, "netns", a.Name, "type", "veth", "peer", "name", bn, "netns", b.Name)
	for _, l := range []struct {
		ns   *NS
		name string
		addr netip.Prefix
		v6   string
	}{{a, an, pa, fmt.Sprintf("fd00:%d:%d::1/64", x, y)}, {b, bn, pb, fmt.Sprintf("fd00:%d:%d::2/64", x, y)}} {
		l.ns.Exec(t, "ip", "addr", "add", l.addr.String(), "dev", l.name)
		l.ns.Exec(t, "ip", "addr", "add", l.v6, "dev", l.name, "nodad")
		l.ns.Exec(t, "ip", "link", "set", l.name, "up")
	}
	return Link{a, an, pa}, Link{b, bn, pb}
}

// PairHost links a namespace with the host's namespace through a veth pair, for a test whose namespace
// must reach a server that runs on the host (at the host side's address). Only the link and its /30 are
// added on the host — 10.251.<pid>.x, so that test processes running at once do not collide — and they
// go when the namespace is removed.
func PairHost(t testing.TB, ns *NS) (host, inside Link) {
	t.Helper()
	i := byte(hostPairs.Add(1) % 64)
	pid := os.Getpid()
	hn, nn := fmt.Sprintf("pwh%d-%d", pid%100000, i), fmt.Sprintf("pwn%d", i)
	ph := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 251, byte(pid), 4*i + 1}), 30)
	pn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 251, byte(pid), 4*i + 2}), 30)
	mustRun(t, "ip", "link", "add", hn, "type", "veth", "peer", "name", nn, "netns", ns.Name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hn).Run() })
	mustRun(t, "ip", "addr", "add", ph.String(), "dev", hn)
	mustRun(t, "ip", "link", "set", hn, "up")
	ns.Exec(t, "ip", "addr", "add", pn.String(), "dev", nn)
	ns.Exec(t, "ip", "link", "set", nn, "up")
	return Link{nil, hn, ph}, Link{ns, nn, pn}
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
