package agent

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/netnstest"
)

// ping sends one ICMP echo request from ns to dst over a raw socket, as root or an app holding
// CAP_NET_RAW would, and reports whether its echo reply came back within a second.
func ping(t *testing.T, ns *netnstest.NS, dst netip.Addr, id uint16) bool {
	t.Helper()
	var got bool
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'p', 'w'}
		binary.BigEndian.PutUint16(req[2:], checksum(req))
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(time.Second.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) {
				return nil
			} else if err != nil {
				return err
			}
			icmp := buf[int(buf[0]&0x0f)*4 : n]
			if len(icmp) >= 8 && icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id {
				got = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// icmpLine is the verdict line of an ICMP flow: ends without ports.
func icmpLine(dir policy.Direction, src, dst netip.Addr, v policy.Verdict, mode policy.Mode) verdict.Line {
	return verdict.Line{Direction: dir, Proto: verdict.Proto(1), Src: netip.AddrPortFrom(src, 0),
		Dst: netip.AddrPortFrom(dst, 0), Verdict: v, Mode: mode}
}

// TestICMPEcho: echo is queued and decided like any new flow, in both directions: Learn allows and
// records it, Monitor audits it, Protect denies it unless a rule names ICMP, each with a verdict line.
func TestICMPEcho(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Learn, 1, 80)
	a, _ := w.start(t, nil)
	if !ping(t, w.pod, w.peerIP, 1) {
		t.Fatal("Learn: no echo reply from the peer")
	}
	waitFor(t, w.out, icmpLine(policy.Egress, w.podIP, w.peerIP, policy.Allow, policy.Learn))
	if !ping(t, w.peer, w.podIP, 2) {
		t.Fatal("Learn: the peer's echo got no reply from the pod")
	}
	waitFor(t, w.out, icmpLine(policy.Ingress, w.peerIP, w.podIP, policy.Allow, policy.Learn))
	found := false
	for _, e := range a.dp.reports.Drain() {
		found = found || e.Protocol == policy.ICMP && e.Port == 0 && e.Peer == w.peerIP
	}
	if !found {
		t.Fatal("Learn did not record the ICMP flow for reporting")
	}

	w.writePolicy(t, policy.Monitor, 2, 80)
	waitRevision(t, a, 2)
	if !ping(t, w.pod, w.peerIP, 3) {
		t.Fatal("Monitor: no echo reply from the peer")
	}
	waitFor(t, w.out, icmpLine(policy.Egress, w.podIP, w.peerIP, policy.Audit, policy.Monitor))

	w.writePolicy(t, policy.Protect, 3, 80)
	waitRevision(t, a, 3)
	if ping(t, w.pod, w.peerIP, 4) {
		t.Fatal("Protect: echo to the peer got a reply without a rule")
	}
	waitFor(t, w.out, icmpLine(policy.Egress, w.podIP, w.peerIP, policy.Deny, policy.Protect))
	if ping(t, w.peer, w.podIP, 5) {
		t.Fatal("Protect: the peer's echo got a reply without a rule")
	}
	waitFor(t, w.out, icmpLine(policy.Ingress, w.peerIP, w.podIP, policy.Deny, policy.Protect))

	p := w.policy(policy.Protect, 4, 80)
	p.Egress[0].Ports = append(p.Egress[0].Ports, policy.PortRange{Protocol: policy.ICMP, Types: []uint16{8}})
	p.Ingress = []policy.Rule{{ID: "ping-in", Origin: policy.OriginUser, Peer: "workload:shop/Deployment/api",
		CIDRs: []netip.Prefix{netip.PrefixFrom(w.peerIP, 32)}, Ports: []policy.PortRange{{Protocol: policy.ICMP}}}}
	w.write(t, p)
	waitRevision(t, a, 4)
	if !ping(t, w.pod, w.peerIP, 6) {
		t.Fatal("Protect: echo to the peer refused although a rule allows ICMP echo")
	}
	waitFor(t, w.out, verdict.Line{Direction: policy.Egress, Proto: verdict.Proto(1), Verdict: policy.Allow, Rule: "api", Mode: policy.Protect})
	if !ping(t, w.peer, w.podIP, 7) {
		t.Fatal("Protect: the peer's echo refused although a rule allows ICMP")
	}
	waitFor(t, w.out, verdict.Line{Direction: policy.Ingress, Proto: verdict.Proto(1), Verdict: policy.Allow, Rule: "ping-in", Mode: policy.Protect})
}

// TestICMPErrorOfAllowedFlow: the peer's port unreachable for an allowed UDP flow reaches the app in
// Protect (conntrack relates it to the flow), so that the app learns at once that nobody listens.
func TestICMPErrorOfAllowedFlow(t *testing.T) {
	w := newWorld(t)
	p := w.policy(policy.Protect, 1)
	p.Egress = []policy.Rule{{ID: "udp", Origin: policy.OriginUser, Peer: "workload:shop/Deployment/api",
		CIDRs: []netip.Prefix{netip.PrefixFrom(w.peerIP, 32)}, Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 9999}}}}
	w.write(t, p)
	w.start(t, nil)
	c, err := w.pod.Dial("udp", netip.AddrPortFrom(w.peerIP, 9999).String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read: %v, want connection refused (the peer's port unreachable)", err)
	}
	waitFor(t, w.out, verdict.Line{Direction: policy.Egress, Proto: verdict.Proto(17), Verdict: policy.Allow, Rule: "udp"})
}
