package injector

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// containerdCaps are the capabilities containerd gives a container that asks for none, each with its
// bit: what a compromised app holds before the injector's drop.
var containerdCaps = map[corev1.Capability]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "FSETID": unix.CAP_FSETID,
	"FOWNER": unix.CAP_FOWNER, "MKNOD": unix.CAP_MKNOD, "NET_RAW": unix.CAP_NET_RAW, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETFCAP": unix.CAP_SETFCAP, "SETPCAP": unix.CAP_SETPCAP,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "SYS_CHROOT": unix.CAP_SYS_CHROOT, "KILL": unix.CAP_KILL,
	"AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
}

// runtimeCaps are the capabilities the runtime gives c as containerd does: its defaults, less all of
// them for a drop of ALL, then c's adds, then c's other drops. Only the default capabilities are known
// here, which is all the test's pods name.
func runtimeCaps(t *testing.T, c corev1.Container) []corev1.Capability {
	t.Helper()
	set := map[corev1.Capability]bool{}
	for name := range containerdCaps {
		set[name] = true
	}
	if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil {
		if hasCap(sc.Capabilities.Drop, "ALL") {
			clear(set)
		}
		for _, a := range sc.Capabilities.Add {
			if _, ok := containerdCaps[capName(a)]; !ok {
				t.Fatalf("container %s adds %s, which the test does not know", c.Name, a)
			}
			set[capName(a)] = true
		}
		for _, d := range sc.Capabilities.Drop {
			delete(set, capName(d))
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// attackEnv carries an attack to the test binary run as the attacker (TestMain).
const attackEnv = "PODWALL_TEST_NETRAW_ATTACK"

// attack is what the attacking process tries, against the peer across the veth pair. Every datagram
// carries Run and the attempt's name, so the peer's listener tells attempts and runs apart.
type attack struct {
	Run            string
	Src, Peer      netip.Addr // IPv4
	Peer6          netip.Addr
	PeerMAC        string
	Ifindex        int
	Guarded, Plain uint16 // the stand-in firewall passes UDP to Guarded only when marked
	Mark           int
}

// attackResult is what the attacker reports: its effective capabilities and each attempt's error
// ("" for success).
type attackResult struct {
	CapEff uint64
	Errors map[string]string
}

// runAttack is the attacker's side: it makes every attempt, ends with a plain datagram to Plain (the
// sentinel that tells the peer the run is over), and writes its result on stdout.
func runAttack(spec string) int {
	var a attack
	if err := json.Unmarshal([]byte(spec), &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res := attackResult{Errors: map[string]string{}}
	try := func(name string, fn func() error) {
		res.Errors[name] = ""
		if err := fn(); err != nil {
			res.Errors[name] = err.Error()
		}
	}
	try("packet", a.packetSocket)
	try("raw", a.rawSocket)
	try("mark", a.markedSend)
	try("ping4", func() error { return ping(unix.AF_INET, unix.IPPROTO_ICMP, a.Peer, 8, 0) })
	try("ping6", func() error { return ping(unix.AF_INET6, unix.IPPROTO_ICMPV6, a.Peer6, 128, 129) })
	var err error
	if res.CapEff, err = capEff(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := a.send(a.Plain, "done", nil); err != nil {
		fmt.Fprintln(os.Stderr, "sentinel:", err)
		return 2
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	return 0
}

// packetSocket sends a hand-made IPv4/UDP packet to the guarded port through an AF_PACKET socket,
// which never crosses the inet hooks.
func (a attack) packetSocket() error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	mac, err := net.ParseMAC(a.PeerMAC)
	if err != nil {
		return err
	}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: a.Ifindex, Halen: 6}
	copy(to.Addr[:], mac)
	udp := udpDatagram(a.Guarded, a.Run+"/packet")
	return unix.Sendto(fd, append(ipv4Header(a.Src, a.Peer, len(udp)), udp...), 0, to)
}

// rawSocket sends a UDP datagram, header and all, to the plain port through a SOCK_RAW socket.
func (a attack) rawSocket() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, udpDatagram(a.Plain, a.Run+"/raw"), 0, &unix.SockaddrInet4{Addr: a.Peer.As4()})
}

// markedSend marks a UDP socket with the mark the stand-in firewall lets through and sends to the
// guarded port; it sends even when the mark is refused, as an attacker would.
func (a attack) markedSend() error {
	var markErr error
	err := a.send(a.Guarded, "mark", func(fd int) {
		markErr = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, a.Mark)
	})
	return errors.Join(markErr, err)
}

// send sends a plain UDP datagram to port, after prepare (if any) has had the socket.
func (a attack) send(port uint16, what string, prepare func(fd int)) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if prepare != nil {
		prepare(fd)
	}
	return unix.Sendto(fd, []byte(a.Run+"/"+what), 0, &unix.SockaddrInet4{Addr: a.Peer.As4(), Port: int(port)})
}

// ping sends one echo request through an ICMP datagram socket and waits for the reply.
func ping(family, proto int, to netip.Addr, request, reply byte) error {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 3}); err != nil {
		return err
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: to.As16()}
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Addr: to.As4()}
	}
	// The kernel sets the identifier and the checksum of a ping socket's echo requests.
	if err := unix.Sendto(fd, []byte{request, 0, 0, 0, 0, 0, 0, 1, 'p', 'w'}, 0, sa); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("no echo reply: %w", err)
	}
	if n < 1 || buf[0] != reply {
		return fmt.Errorf("got ICMP type %d, want an echo reply", buf[0])
	}
	return nil
}

func udpDatagram(port uint16, payload string) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], port)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...) // checksum 0: none, which IPv4 allows
}

func ipv4Header(src, dst netip.Addr, payload int) []byte {
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(h[2:], uint16(20+payload))
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return h
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// capEff reads the process's effective capabilities.
func capEff() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// received records the tags of the datagrams the peer's listeners got.
type received struct {
	mu   sync.Mutex
	tags map[string]bool
}

func (r *received) listen(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.tags[string(buf[:n])] = true
			r.mu.Unlock()
		}
	}()
}

func (r *received) has(tag string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tags[tag]
}

// TestInjectedAppCannotBypassWithNetRaw attacks the promise at the kernel. A root process holding the
// capabilities the runtime gives the injected app container (containerd's defaults, less what the
// injector drops) cannot open AF_PACKET or SOCK_RAW sockets nor set SO_MARK: the peer receives none
// of what it sends that way, where the same process with the runtime's defaults gets through a
// stand-in firewall that, like the sidecar's ruleset, passes marked traffic. It can still ping
// (IPv4 and IPv6) once the pod's sysctls, as injected, are in its namespace, and not before.
func TestInjectedAppCannotBypassWithNetRaw(t *testing.T) {
	pod := testPod()
	pod.Name, pod.Namespace = "web", "shop"
	if _, err := New(SidecarOptions{NativeSidecars: true, PolicyGenURL: "https://policygen.invalid"}).Inject(pod, Namespace{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	app, peer := netnstest.New(t), netnstest.New(t)
	appLink, peerLink := netnstest.Pair(t, app, peer)
	const guarded, plain, mark = 7001, 7002, 0x2a
	app.Exec(t, "nft", fmt.Sprintf("add table inet standin; add chain inet standin out { type filter hook output priority 0; }; "+
		"add rule inet standin out udp dport %d meta mark != %#x drop", guarded, mark))
	got := &received{tags: map[string]bool{}}
	for _, port := range []uint16{guarded, plain} {
		got.listen(t, peer, netip.AddrPortFrom(peerLink.Addr.Addr(), port))
	}
	peerIfc, _ := link(t, peer, peerLink.Name)
	appIfc, _ := link(t, app, appLink.Name)
	a := attack{Src: appLink.Addr.Addr(), Peer: peerLink.Addr.Addr(), Peer6: globalIPv6(t, peer, peerLink.Name),
		PeerMAC: peerIfc.HardwareAddr.String(), Ifindex: appIfc.Index, Guarded: guarded, Plain: plain, Mark: mark}

	// The runtime's defaults, as without podwall: every bypass reaches the peer.
	a.Run = "defaults"
	res := a.runAs(t, app, got, slices.Sorted(maps.Keys(containerdCaps)))
	for _, what := range []string{"packet", "raw", "mark"} {
		if res.Errors[what] != "" || !got.has(a.Run+"/"+what) {
			t.Fatalf("with NET_RAW, %s: error %q, peer received %v; the test cannot see the attack", what, res.Errors[what], got.has(a.Run+"/"+what))
		}
	}

	caps := runtimeCaps(t, pod.Spec.Containers[0])
	if slices.Contains(caps, netRaw) {
		t.Fatalf("the injected app container keeps NET_RAW: %v", caps)
	}
	for _, sysctls := range []bool{false, true} {
		if sysctls {
			for _, s := range pod.Spec.SecurityContext.Sysctls {
				app.Exec(t, "sysctl", "-w", s.Name+"="+s.Value)
			}
		}
		a.Run = fmt.Sprintf("injected-sysctls-%v", sysctls)
		res := a.runAs(t, app, got, caps)
		if want := capMask(caps); res.CapEff != want {
			t.Fatalf("attacker's effective capabilities %#x, want %#x (%v)", res.CapEff, want, caps)
		}
		for _, what := range []string{"packet", "raw", "mark"} {
			if !strings.Contains(res.Errors[what], syscall.EPERM.Error()) {
				t.Errorf("%s: %s without NET_RAW: error %q, want %v", a.Run, what, res.Errors[what], syscall.EPERM)
			}
			if got.has(a.Run + "/" + what) {
				t.Errorf("%s: the peer received what %s sent without NET_RAW", a.Run, what)
			}
		}
		for _, what := range []string{"ping4", "ping6"} {
			switch err := res.Errors[what]; {
			case sysctls && err != "":
				t.Errorf("%s: %s: %s, want an echo reply", a.Run, what, err)
			case !sysctls && !strings.Contains(err, syscall.EACCES.Error()):
				t.Errorf("%s: %s without ping_group_range: error %q, want %v", a.Run, what, err, syscall.EACCES)
			}
		}
	}
}

// runAs runs the attacker in ns as root with exactly caps (bounding set; the runtime leaves the
// inheritable set empty) and waits until the peer has its sentinel, so that whatever it sent before
// has arrived too.
func (a attack) runAs(t *testing.T, ns *netnstest.NS, got *received, caps []corev1.Capability) attackResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"-all"}
	for _, c := range caps {
		names = append(names, "+"+strings.ToLower(string(c)))
	}
	spec, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, "setpriv", "--reuid=0", "--regid=0", "--clear-groups",
		"--bounding-set="+strings.Join(names, ","), "--inh-caps=-all", self)
	cmd.Env = append(os.Environ(), attackEnv+"="+string(spec))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("attacker %s: %v: %s", a.Run, err, stderr.String())
	}
	var res attackResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("attacker %s: %v: %s", a.Run, err, out)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !got.has(a.Run + "/done") {
			return fmt.Errorf("the peer has not received %s's sentinel", a.Run)
		}
		return nil
	})
	return res
}

func capMask(caps []corev1.Capability) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << containerdCaps[c]
	}
	return m
}

// link is the interface name of ns, with its addresses.
func link(t *testing.T, ns *netnstest.NS, name string) (ifc *net.Interface, addrs []net.Addr) {
	t.Helper()
	if err := ns.Do(func() (err error) {
		if ifc, err = net.InterfaceByName(name); err != nil {
			return err
		}
		addrs, err = ifc.Addrs()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ifc, addrs
}

func globalIPv6(t *testing.T, ns *netnstest.NS, name string) netip.Addr {
	t.Helper()
	_, addrs := link(t, ns, name)
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	t.Fatalf("%s has no global IPv6 address", name)
	return netip.Addr{}
}
