package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Builders for hand-made packets. They fill lengths correctly; tests break fields afterwards.

func ipv4(proto uint8, src, dst string, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, l4...)
}

// ipv6 builds an IPv6 packet carrying the extension headers exts, whose next-header bytes it chains.
func ipv6(proto uint8, src, dst string, l4 []byte, exts ...ext) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	b[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	next := 6 // offset of the next-header field to fill
	for _, e := range exts {
		b[next] = e.typ
		next = len(b)
		b = append(b, e.hdr...)
	}
	b[next] = proto
	b = append(b, l4...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

type ext struct {
	typ uint8
	hdr []byte
}

// opts is a hop-by-hop, routing or destination options header of n 8-octet units.
func opts(typ uint8, units int) ext {
	h := make([]byte, units*8)
	h[1] = uint8(units - 1)
	return ext{typ, h}
}

func fragment(offset uint16, more bool) ext {
	h := make([]byte, 8)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	return ext{44, h}
}

// ah is an authentication header with a 4-byte integrity check value: 12 bytes, length field 1.
func ah() ext {
	h := make([]byte, 12)
	h[1] = 1
	return ext{51, h}
}

func tcp(sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = flags
	return b
}

func udp(sport, dport uint16, payload int) []byte {
	b := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+payload))
	return b
}

func sctp(sport, dport uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// edit returns a copy of b changed by f.
func edit(b []byte, f func([]byte) []byte) []byte {
	return f(append([]byte(nil), b...))
}

func TestParse(t *testing.T) {
	syn := ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(40000, 443, TCPFlagSYN))
	for _, tc := range []struct {
		name string
		b    []byte
		want Packet
	}{
		{"ipv4 tcp syn", syn,
			Packet{Proto: ProtoTCP, Src: ap("10.0.0.1:40000"), Dst: ap("10.0.0.2:443"), TCPFlags: TCPFlagSYN}},
		{"ipv4 udp", ipv4(ProtoUDP, "10.0.0.1", "10.96.0.10", udp(5353, 53, 30)),
			Packet{Proto: ProtoUDP, Src: ap("10.0.0.1:5353"), Dst: ap("10.96.0.10:53")}},
		{"ipv4 sctp", ipv4(ProtoSCTP, "10.0.0.1", "10.0.0.2", sctp(1, 2)),
			Packet{Proto: ProtoSCTP, Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}},
		{"ipv4 icmp has no ports", ipv4(ProtoICMP, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0, 0, 0, 0, 0}),
			Packet{Proto: ProtoICMP, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:0"), ICMPType: 8}},
		{"ipv4 icmp port unreachable", ipv4(ProtoICMP, "10.0.0.1", "10.0.0.2", []byte{3, 3, 0, 0, 0, 0, 0, 0}),
			Packet{Proto: ProtoICMP, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:0"), ICMPType: 3, ICMPCode: 3}},
		{"ipv4 options", edit(syn, func(b []byte) []byte {
			b = append(b[:20:20], append([]byte{1, 1, 1, 0}, b[20:]...)...) // NOP NOP NOP EOL
			b[0] = 0x46
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
			return b
		}), Packet{Proto: ProtoTCP, Src: ap("10.0.0.1:40000"), Dst: ap("10.0.0.2:443"), TCPFlags: TCPFlagSYN}},
		{"ipv4 first fragment", edit(syn, func(b []byte) []byte { b[6] = 0x20; return b }), // MF, offset 0
			Packet{Proto: ProtoTCP, Src: ap("10.0.0.1:40000"), Dst: ap("10.0.0.2:443"), TCPFlags: TCPFlagSYN}},
		{"ipv4 trailing padding ignored", append(ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", udp(1, 2, 0)), 0, 0, 0, 0),
			Packet{Proto: ProtoUDP, Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}},
		{"ipv4 capture shorter than packet", ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", udp(1, 2, 1000))[:40],
			Packet{Proto: ProtoUDP, Src: ap("10.0.0.1:1"), Dst: ap("10.0.0.2:2")}},
		{"ipv4 unknown protocol", ipv4(47, "10.0.0.1", "10.0.0.2", nil),
			Packet{Proto: 47, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:0")}},
		{"ipv6 tcp", ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1234, 80, TCPFlagSYN|TCPFlagECE|TCPFlagCWR)),
			Packet{Proto: ProtoTCP, Src: ap("[fd00::1]:1234"), Dst: ap("[fd00::2]:80"), TCPFlags: 0xc2}},
		{"ipv6 extension chain", ipv6(ProtoUDP, "fd00::1", "fd00::2", udp(1, 53, 4),
			opts(0, 1), opts(60, 2), opts(43, 1), fragment(0, true), ah(), opts(60, 1)),
			Packet{Proto: ProtoUDP, Src: ap("[fd00::1]:1"), Dst: ap("[fd00::2]:53")}},
		{"ipv6 icmp", ipv6(ProtoICMPv6, "fe80::1", "ff02::1", []byte{135, 0, 0, 0}),
			Packet{Proto: ProtoICMPv6, Src: ap("[fe80::1]:0"), Dst: ap("[ff02::1]:0"), ICMPType: 135}},
		{"ipv6 echo behind a hop-by-hop header", ipv6(ProtoICMPv6, "fd00::1", "fd00::2", []byte{128, 0, 0, 0}, opts(0, 1)),
			Packet{Proto: ProtoICMPv6, Src: ap("[fd00::1]:0"), Dst: ap("[fd00::2]:0"), ICMPType: 128}},
		{"ipv6 no next header", ipv6(59, "fd00::1", "fd00::2", nil),
			Packet{Proto: 59, Src: ap("[fd00::1]:0"), Dst: ap("[fd00::2]:0")}},
		{"ipv6 v4-mapped stays ipv6", ipv6(ProtoTCP, "::ffff:10.0.0.1", "fd00::2", tcp(1, 2, 0)),
			Packet{Proto: ProtoTCP, Src: ap("[::ffff:10.0.0.1]:1"), Dst: ap("[fd00::2]:2")}},
		{"ipv6 jumbo payload length zero", edit(ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0)),
			func(b []byte) []byte { b[4], b[5] = 0, 0; return b }),
			Packet{Proto: ProtoTCP, Src: ap("[fd00::1]:1"), Dst: ap("[fd00::2]:2")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
				t.Fatalf("Parse (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	syn := ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(40000, 443, TCPFlagSYN))
	syn6 := ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, TCPFlagSYN))
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 5", edit(syn, func(b []byte) []byte { b[0] = 0x55; return b }), ErrMalformed},
		{"ipv4 short header", syn[:19], ErrTruncated},
		{"ipv4 ihl 4", edit(syn, func(b []byte) []byte { b[0] = 0x44; return b }), ErrMalformed},
		{"ipv4 ihl beyond capture", edit(syn, func(b []byte) []byte { b[0] = 0x4f; binary.BigEndian.PutUint16(b[2:], 60); return b }), ErrTruncated},
		{"ipv4 total below ihl", edit(syn, func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }), ErrMalformed},
		{"ipv4 non-first fragment", edit(syn, func(b []byte) []byte { b[7] = 1; return b }), ErrFragment},
		{"ipv4 tcp cut by total length", edit(syn, func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 28); return b }), ErrTruncated},
		{"ipv4 tiny first fragment", edit(syn, func(b []byte) []byte {
			b[6] = 0x20
			binary.BigEndian.PutUint16(b[2:], 28)
			return b[:28]
		}), ErrTruncated},
		{"ipv4 tcp cut by capture", syn[:39], ErrTruncated},
		{"tcp data offset 4", edit(syn, func(b []byte) []byte { b[32] = 4 << 4; return b }), ErrMalformed},
		{"tcp data offset past packet", edit(syn, func(b []byte) []byte { b[32] = 6 << 4; return b }), ErrMalformed},
		{"udp length 7", edit(ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", udp(1, 2, 0)), func(b []byte) []byte { b[25] = 7; return b }), ErrMalformed},
		{"udp length past packet", edit(ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", udp(1, 2, 0)), func(b []byte) []byte { b[25] = 9; return b }), ErrMalformed},
		{"sctp short", ipv4(ProtoSCTP, "10.0.0.1", "10.0.0.2", sctp(1, 2)[:11]), ErrTruncated},
		{"icmp short", ipv4(ProtoICMP, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0}), ErrTruncated},
		{"icmpv6 short", ipv6(ProtoICMPv6, "fd00::1", "fd00::2", []byte{128}), ErrTruncated},
		{"ipv6 short header", syn6[:39], ErrTruncated},
		{"ipv6 tcp cut", syn6[:59], ErrTruncated},
		{"ipv6 payload length cuts tcp", edit(syn6, func(b []byte) []byte { b[5] = 10; return b }), ErrTruncated},
		{"ipv6 non-first fragment", ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), fragment(185, false)), ErrFragment},
		{"ipv6 hop-by-hop not first", ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), opts(60, 1), opts(0, 1)), ErrMalformed},
		{"ipv6 extension past payload", ipv6(ProtoTCP, "fd00::1", "fd00::2", nil, opts(60, 1))[:45], ErrTruncated},
		{"ipv6 extension length past payload", edit(ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), opts(60, 1)),
			func(b []byte) []byte { b[41] = 200; return b }), ErrTruncated},
		{"ipv6 fragment header cut", ipv6(ProtoTCP, "fd00::1", "fd00::2", nil, fragment(0, true))[:47], ErrTruncated},
		{"ipv6 endless extensions", ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), manyOpts(17)...), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %+v, %v; want %v", got, err, tc.want)
			}
			if got != (Packet{}) {
				t.Fatalf("Parse returned %+v with its error", got)
			}
		})
	}
}

func manyOpts(n int) []ext {
	e := make([]ext, n)
	for i := range e {
		e[i] = opts(60, 1)
	}
	return e
}

func TestParseAllowsMaxExtensions(t *testing.T) {
	b := ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), manyOpts(maxExtHeaders)...)
	if _, err := Parse(b); err != nil {
		t.Fatalf("%d extension headers: %v", maxExtHeaders, err)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	for name, b := range map[string][]byte{
		"ipv4": ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(40000, 443, TCPFlagSYN)),
		"ipv6": ipv6(ProtoUDP, "fd00::1", "fd00::2", udp(1, 53, 4), opts(0, 1), fragment(0, true)),
	} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Parse(b) }); n != 0 {
			t.Errorf("%s: Parse allocates %v times per packet", name, n)
		}
	}
}

// FuzzParse checks that no input panics the parser and that what it accepts is self-consistent and
// taken from where the IP header says.
func FuzzParse(f *testing.F) {
	f.Add(ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(40000, 443, TCPFlagSYN)))
	f.Add(ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", udp(1, 2, 3)))
	f.Add(ipv4(ProtoICMP, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0}))
	f.Add(ipv6(ProtoSCTP, "fd00::1", "fd00::2", sctp(1, 2), opts(0, 1), fragment(0, true), ah()))
	f.Add(ipv6(ProtoTCP, "fd00::1", "fd00::2", tcp(1, 2, 0), fragment(8, false)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		var src, dst []byte
		switch b[0] >> 4 {
		case 4:
			if !p.Src.Addr().Is4() || !p.Dst.Addr().Is4() {
				t.Fatalf("IPv4 packet gave %v -> %v", p.Src, p.Dst)
			}
			src, dst = b[12:16], b[16:20]
		case 6:
			if !p.Src.Addr().Is6() || !p.Dst.Addr().Is6() {
				t.Fatalf("IPv6 packet gave %v -> %v", p.Src, p.Dst)
			}
			src, dst = b[8:24], b[24:40]
		default:
			t.Fatalf("accepted IP version %d", b[0]>>4)
		}
		if string(p.Src.Addr().AsSlice()) != string(src) || string(p.Dst.Addr().AsSlice()) != string(dst) {
			t.Fatalf("addresses %v -> %v not the header's", p.Src, p.Dst)
		}
		if !HasPorts(p.Proto) && (p.Src.Port() != 0 || p.Dst.Port() != 0) {
			t.Fatalf("protocol %d without ports gave ports: %+v", p.Proto, p)
		}
		if p.Proto != ProtoTCP && p.TCPFlags != 0 {
			t.Fatalf("protocol %d gave TCP flags: %+v", p.Proto, p)
		}
		if !IsICMP(p.Proto) && (p.ICMPType != 0 || p.ICMPCode != 0) {
			t.Fatalf("protocol %d gave an ICMP type: %+v", p.Proto, p)
		}
		if want, ok := kernelL4Proto(b); ok && b[0]>>4 == 6 && p.Proto != want {
			t.Fatalf("protocol %d, the kernel sees %d", p.Proto, want)
		}
		if again, _ := Parse(b); again != p {
			t.Fatalf("parse not deterministic: %+v then %+v", p, again)
		}
		withData, data, whole, err := ParseData(b)
		if err != nil || withData != p {
			t.Fatalf("ParseData: %+v, %v; Parse: %+v", withData, err, p)
		}
		if len(data) > 0 && (p.Proto != ProtoTCP && p.Proto != ProtoUDP || len(data) > len(b)-20) {
			t.Fatalf("data %q is no TCP or UDP data within the packet", data)
		}
		if !whole && p.Proto != ProtoTCP && p.Proto != ProtoUDP {
			t.Fatalf("protocol %d has data cut short", p.Proto)
		}
	})
}

// kernelExtHeaders are the next-header values the kernel walks as IPv6 extension headers
// (include/net/ipv6.h ipv6_ext_hdr): hop-by-hop, routing, fragment, authentication, no next header,
// destination options. Every other value is an upper-layer protocol to nftables' meta l4proto.
var kernelExtHeaders = map[uint8]bool{0: true, 43: true, 44: true, 51: true, 59: true, 60: true}

// kernelL4Proto is the upper-layer protocol of an IPv6 packet as the kernel's ipv6_find_hdr finds it,
// for a first fragment; ok is false when the kernel would stop without one (truncated, No Next Header).
func kernelL4Proto(b []byte) (uint8, bool) {
	if len(b) < 40 {
		return 0, false
	}
	next, off := b[6], 40
	for kernelExtHeaders[next] {
		if next == 59 || len(b) < off+8 {
			return 0, false
		}
		size := (int(b[off+1]) + 1) * 8
		switch next {
		case 44:
			size = 8
		case 51:
			size = (int(b[off+1]) + 2) * 4
		}
		next, off = b[off], off+size
	}
	return next, true
}

// TestExtensionHeadersAsTheKernelSees: protocols the kernel treats as upper-layer are never walked,
// whatever follows them.
func TestExtensionHeadersAsTheKernelSees(t *testing.T) {
	for proto := range 256 {
		pkt := ipv6(uint8(proto), "fd00::1", "fd00::2", make([]byte, 64), opts(60, 1))
		got, err := Parse(pkt)
		want, ok := kernelL4Proto(pkt)
		if !ok {
			continue
		}
		if err != nil && !kernelExtHeaders[uint8(proto)] && !HasPorts(uint8(proto)) { // zero bytes are no valid TCP, UDP or SCTP header
			t.Errorf("protocol %d: %v", proto, err)
			continue
		}
		if err == nil && got.Proto != want {
			t.Errorf("protocol %d: parsed as %d, the kernel sees %d", proto, got.Proto, want)
		}
	}
	// A Mobility header followed by TCP bytes is Mobility, with no ports.
	mob := ipv6(135, "fd00::1", "fd00::2", tcp(40000, 443, TCPFlagSYN))
	if p, err := Parse(mob); err != nil || p.Proto != 135 || p.Dst.Port() != 0 {
		t.Fatalf("Parse(mobility) = %+v, %v; want protocol 135 without ports", p, err)
	}
}

func BenchmarkParse(b *testing.B) {
	for name, pkt := range map[string][]byte{
		"ipv4-tcp": ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(40000, 443, TCPFlagSYN)),
		"ipv6-ext": ipv6(ProtoUDP, "fd00::1", "fd00::2", udp(1, 53, 4), opts(0, 1), opts(60, 1), fragment(0, true)),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestParseData(t *testing.T) {
	withData := func(l4 []byte, data string) []byte {
		if len(l4) == 8 { // UDP: its length covers the data
			binary.BigEndian.PutUint16(l4[4:], uint16(8+len(data)))
		}
		return append(l4, data...)
	}
	seg := tcp(40000, 53, TCPFlagPSH|TCPFlagACK)
	for _, tc := range []struct {
		name  string
		b     []byte
		data  string
		whole bool
	}{
		{"ipv4 udp", ipv4(ProtoUDP, "10.0.0.1", "10.96.0.10", withData(udp(5353, 53, 0), "query")), "query", true},
		{"ipv4 udp padding ignored", append(ipv4(ProtoUDP, "10.0.0.1", "10.0.0.2", withData(udp(1, 2, 0), "ab")), 0, 0), "ab", true},
		{"ipv6 tcp behind extensions", ipv6(ProtoTCP, "fd00::1", "fd00::2", withData(seg, "\x00\x05hello"), opts(0, 1), fragment(0, true)), "\x00\x05hello", true},
		{"capture shorter than the data", ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", withData(seg, "0123456789"))[:44], "0123", false},
		{"tcp without data", ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", tcp(1, 2, TCPFlagSYN)), "", true},
		{"capture cut in the TCP header's options", edit(ipv4(ProtoTCP, "10.0.0.1", "10.0.0.2", withData(seg, "0123456789")),
			func(b []byte) []byte { b[32] = 6 << 4; return b[:42] }), "", false},
		{"icmp has none", ipv4(ProtoICMP, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0, 1, 2, 3, 4}), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, data, whole, err := ParseData(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := Parse(tc.b); p != want {
				t.Errorf("packet %+v, Parse gives %+v", p, want)
			}
			if string(data) != tc.data || whole != tc.whole {
				t.Errorf("data %q whole %v, want %q %v", data, whole, tc.data, tc.whole)
			}
		})
	}
	if _, data, whole, err := ParseData([]byte{0x45}); err == nil || data != nil || whole {
		t.Errorf("truncated header: %q %v %v", data, whole, err)
	}
}
