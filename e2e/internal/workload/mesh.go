package workload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// meshTable is the init step's own nftables table, apart from podwall's.
const meshTable = "e2emesh"

// redirect installs what istio-init installs with iptables, in nftables: every outgoing TCP
// connection of the pod, except the proxy's own (by user id) and loopback traffic, is redirected to
// the proxy's local port. It runs once in an init container with NET_ADMIN and exits.
func redirect(port uint16, proxyUID uint32, out io.Writer) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: meshTable})
	ch := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	rules := [][]expr.Any{
		{&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(proxyUID)}, ret},
		{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}, ret},
		{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Redir{RegisterProtoMin: 1}},
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install redirect: %w", err)
	}
	fmt.Fprintf(out, "redirect installed to-port=%d proxy-uid=%d\n", port, proxyUID)
	return nil
}

// ifname is an interface name as nftables compares it: NUL-padded to IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// proxy accepts redirected connections, recovers each one's original destination and relays to it.
func proxy(ctx context.Context, addr string, out io.Writer) error {
	ln, err := listen(ctx, addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "proxy listening addr=%s\n", addr)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go relay(conn.(*net.TCPConn), out)
	}
}

func relay(in *net.TCPConn, out io.Writer) {
	defer in.Close()
	dst, err := originalDst(in)
	if err != nil {
		fmt.Fprintf(out, "proxy fail from=%s err=%q\n", in.RemoteAddr(), err.Error())
		return
	}
	up, err := net.Dial("tcp", dst.String())
	if err != nil {
		fmt.Fprintf(out, "proxy fail from=%s to=%s err=%q\n", in.RemoteAddr(), dst, err.Error())
		return
	}
	defer up.Close()
	fmt.Fprintf(out, "proxy relay from=%s to=%s\n", in.RemoteAddr(), dst)
	done := make(chan struct{})
	go func() {
		io.Copy(up, in)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(in, up)
	in.CloseWrite()
	<-done
}

// originalDst reads the destination a connection had before the NAT redirect (SO_ORIGINAL_DST,
// which returns a struct sockaddr_in; x/sys has no typed getter for it, so the IPv6Mreq getter, whose
// 20-byte buffer is large enough, carries the bytes).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var mreq *unix.IPv6Mreq
	var serr error
	if err := raw.Control(func(fd uintptr) {
		mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	b := mreq.Multiaddr
	if binary.NativeEndian.Uint16(b[0:2]) != syscall.AF_INET {
		return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST: not an IPv4 address")
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}
