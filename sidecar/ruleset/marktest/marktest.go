// Package marktest plays, in root tests, the guarded workload forging packet marks: a process of an
// unprivileged uid (65534) holding CAP_NET_RAW and no other capability, as a container runtime's
// defaults give an app, which sets SO_MARK on its socket and connects, or binds a port; and the
// receiving end, which counts what arrived. The attacker is the test binary started again, so a test package that uses it
// calls Main first thing in its TestMain.
package marktest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// env carries the attack to the attacker: "mark network address".
const env = "PODWALL_MARKTEST_ATTACK"

// nobody is the attacker's uid and gid.
const nobody = 65534

// Main runs the attack and exits when the test binary was started as the attacker; otherwise it
// returns at once.
func Main() {
	spec := os.Getenv(env)
	if spec == "" {
		return
	}
	if addr, ok := strings.CutPrefix(spec, "listen "); ok {
		listen(addr)
	} else if args, ok := strings.CutPrefix(spec, "rawudp "); ok {
		_ = json.NewEncoder(os.Stdout).Encode(rawUDP(args))
	} else {
		_ = json.NewEncoder(os.Stdout).Encode(attack(spec))
	}
	os.Exit(0)
}

// listen is the app that binds a port: it says who it runs as once it listens on addr, then one line
// per connection it accepts, until its stdin closes.
func listen(addr string) {
	r := report{UID: os.Getuid()}
	var err error
	r.CapEff, err = capEff()
	var l net.Listener
	if err == nil {
		l, err = net.Listen("tcp", addr)
	}
	if err != nil {
		r.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	if err != nil {
		return
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			fmt.Println("accepted")
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// report is what the attacker tells the test: who it ran as, the mark its socket really carried, and
// how its attempt ended.
type report struct {
	UID    int    `json:"uid"`
	CapEff uint64 `json:"capEff"`
	Mark   uint32 `json:"mark"`
	Err    string `json:"err,omitempty"`
	// Errno is the error's errno, if it has one, so that the test can tell a refusal from a timeout.
	Errno syscall.Errno `json:"errno,omitempty"`
}

func attack(spec string) report {
	r := report{UID: os.Getuid()}
	var err error
	if r.CapEff, err = capEff(); err != nil {
		r.Err = err.Error()
		return r
	}
	var mark uint64
	var network, address string
	if _, err := fmt.Sscan(spec, &mark, &network, &address); err != nil {
		r.Err = fmt.Sprintf("attack %q: %v", spec, err)
		return r
	}
	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(uint32(mark))); serr != nil {
				return
			}
			var got int
			got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
			r.Mark = uint32(got)
		})
		return errors.Join(err, serr)
	}}
	c, err := d.Dial(network, address)
	if err == nil {
		if strings.HasPrefix(network, "udp") {
			_, err = io.WriteString(c, "forged")
		}
		c.Close()
	}
	if err != nil {
		r.Err = err.Error()
		errors.As(err, &r.Errno)
	}
	return r
}

// rawUDP sends one UDP datagram over IPv4, "from to payload", through a raw socket that writes its own
// IP header: whatever source it names.
func rawUDP(args string) report {
	r := report{UID: os.Getuid()}
	var err error
	if r.CapEff, err = capEff(); err != nil {
		r.Err = err.Error()
		return r
	}
	var from, to, payload string
	if _, err := fmt.Sscan(args, &from, &to, &payload); err != nil {
		r.Err = fmt.Sprintf("rawudp %q: %v", args, err)
		return r
	}
	src, err1 := netip.ParseAddrPort(from)
	dst, err2 := netip.ParseAddrPort(to)
	if err := errors.Join(err1, err2); err != nil || !src.Addr().Is4() || !dst.Addr().Is4() {
		r.Err = fmt.Sprintf("rawudp %q: want IPv4 address:port pairs (%v)", args, err)
		return r
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IPPROTO_RAW: IP_HDRINCL
	if err == nil {
		defer unix.Close(fd)
		s, d := src.Addr().As4(), dst.Addr().As4()
		n := 20 + 8 + len(payload)
		// IPv4 header (the kernel fills in the checksum), then UDP without a checksum (RFC 768).
		pkt := []byte{0x45, 0, byte(n >> 8), byte(n), 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
		pkt = append(append(pkt, s[:]...), d[:]...)
		pkt = append(pkt, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()),
			byte((n-20)>>8), byte(n-20), 0, 0)
		pkt = append(pkt, payload...)
		err = unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d})
	}
	if err != nil {
		r.Err = err.Error()
		errors.As(err, &r.Errno)
	}
	return r
}

// capEff reads the process's effective capabilities.
func capEff() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// Attacker attacks from one network namespace.
type Attacker struct {
	t   testing.TB
	ns  *netnstest.NS
	bin string
}

// New prepares an attacker in ns: a copy of the test binary that uid 65534 may run (the original
// lies in the go command's private work directory).
func New(t testing.TB, ns *netnstest.NS) *Attacker {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir makes both, mode 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "attacker")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return &Attacker{t: t, ns: ns, bin: bin}
}

// command is the attacker's process: the test binary as uid 65534 with CAP_NET_RAW alone.
func (a *Attacker) command(spec string) *exec.Cmd {
	ids := strconv.Itoa(nobody)
	cmd := a.ns.Command(a.t.Context(), "setpriv", "--reuid="+ids, "--regid="+ids, "--clear-groups",
		"--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw", a.bin)
	cmd.Env = append(os.Environ(), env+"="+spec)
	return cmd
}

// check fails the test unless the attacker ran as uid 65534 with CAP_NET_RAW alone.
func (a *Attacker) check(r report) {
	a.t.Helper()
	if r.UID != nobody || r.CapEff != 1<<unix.CAP_NET_RAW {
		a.t.Fatalf("attacker ran as uid %d with capabilities %#x, want uid %d with CAP_NET_RAW alone", r.UID, r.CapEff, nobody)
	}
}

// Listen plays an app that binds a TCP port: it listens on addr in the namespace until the test ends,
// counting the connections it accepts.
func (a *Attacker) Listen(addr string) *Counter {
	a.t.Helper()
	cmd := a.command("listen " + addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	var r report
	if !lines.Scan() {
		a.t.Fatalf("attacker listening on %s said nothing: %v", addr, lines.Err())
	}
	if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
		a.t.Fatalf("attacker said %q: %v", lines.Bytes(), err)
	}
	a.check(r)
	if r.Err != "" {
		a.t.Fatalf("attacker listening on %s: %s", addr, r.Err)
	}
	c := &Counter{}
	go func() {
		for lines.Scan() {
			c.n.Add(1)
		}
	}()
	return c
}

// Connect runs one attack: a socket marked mark connects to to over network ("tcp" or "udp", which
// also sends one datagram). It returns how the attempt ended for the attacker (nil: connected, or
// sent); whether anything arrived is for the receiving end to tell. It fails the test if the attacker
// ran with other credentials than uid 65534 and CAP_NET_RAW alone, or if its socket did not carry the
// mark: the attack would prove nothing.
func (a *Attacker) Connect(mark uint32, network string, to netip.AddrPort) error {
	a.t.Helper()
	r := a.run(fmt.Sprintf("%d %s %s", mark, network, to))
	if r.Mark != mark {
		a.t.Fatalf("attacker's socket carried mark %#x, want %#x (%s)", r.Mark, mark, r.Err)
	}
	switch {
	case r.Errno != 0:
		return fmt.Errorf("%s: %w", r.Err, r.Errno)
	case r.Err != "":
		return errors.New(r.Err)
	}
	return nil
}

// run runs one attack to its end and returns its report, failing the test if the attacker could not
// run or ran with other credentials than it should.
func (a *Attacker) run(arg string) report {
	a.t.Helper()
	out, err := a.command(arg).Output()
	if err != nil {
		a.t.Fatalf("attacker: %v: %s", err, out)
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		a.t.Fatalf("attacker said %q: %v", out, err)
	}
	a.check(r)
	return r
}

// SendRawUDP sends one UDP datagram over IPv4 from a raw socket, its IP header written by the
// attacker: the source from is forged. It returns how the send ended; whether anything arrived is
// for the receiving end to tell.
func (a *Attacker) SendRawUDP(from, to netip.AddrPort, payload string) error {
	a.t.Helper()
	r := a.run(fmt.Sprintf("rawudp %s %s %s", from, to, payload))
	if r.Err != "" {
		return errors.New(r.Err)
	}
	return nil
}

// Counter counts what a listener received: TCP connections accepted or UDP datagrams read.
type Counter struct {
	n    atomic.Int64
	addr net.Addr
}

// Addr is the listener's address.
func (c *Counter) Addr() net.Addr { return c.addr }

// Received is the count so far.
func (c *Counter) Received() int64 { return c.n.Load() }

// Count listens on network ("tcp" or "udp") and addr in ns (nil: the test's own namespace) and counts
// what arrives, until the test ends: the receiving end of an attack.
func Count(t testing.TB, ns *netnstest.NS, network, addr string) *Counter {
	t.Helper()
	c := &Counter{}
	in := func(fn func() error) error { return fn() }
	if ns != nil {
		in = ns.Do
	}
	if network == "tcp" {
		var l net.Listener
		if err := in(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
			t.Fatalf("listen %s %s: %v", network, addr, err)
		}
		t.Cleanup(func() { l.Close() })
		c.addr = l.Addr()
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				c.n.Add(1)
				conn.Close()
			}
		}()
		return c
	}
	var pc net.PacketConn
	if err := in(func() (err error) { pc, err = net.ListenPacket(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	c.addr = pc.LocalAddr()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			c.n.Add(1)
		}
	}()
	return c
}

// WaitReceived waits until c has counted want, for at most two seconds.
func (c *Counter) WaitReceived(t testing.TB, want int64, what string) {
	t.Helper()
	testutil.Eventually(t, 2*time.Second, func() error {
		if n := c.Received(); n != want {
			return fmt.Errorf("%s received %d, want %d", what, n, want)
		}
		return nil
	})
}

// Control is a net.Dialer Control that sets SO_MARK mark on the socket before it connects.
func Control(mark uint32) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}
}

// Dial connects over TCP from ns as the test process (root), its socket marked mark: the sidecar's
// own connections carry ruleset.MarkSelf.
func Dial(ns *netnstest.NS, mark uint32, to netip.AddrPort) error {
	d := net.Dialer{Timeout: 2 * time.Second, Control: Control(mark)}
	return ns.Do(func() error {
		c, err := d.Dial("tcp", to.String())
		if err == nil {
			c.Close()
		}
		return err
	})
}
