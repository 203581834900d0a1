package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IANA protocol numbers the parser knows. Parse reports any other protocol by number, without ports.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// TCP flag bits, as they appear in Packet.TCPFlags (byte 13 of the TCP header).
const (
	TCPFlagFIN uint8 = 1 << iota
	TCPFlagSYN
	TCPFlagRST
	TCPFlagPSH
	TCPFlagACK
	TCPFlagURG
	TCPFlagECE
	TCPFlagCWR
)

// Packet is what a verdict needs to know about one packet. It is a small value: copy it freely.
type Packet struct {
	// Proto is the L4 protocol number: after IPv6 extension headers, the first header that is not one.
	Proto uint8
	// Src and Dst are the endpoints. Their addresses are 4-byte for IPv4 and 16-byte for IPv6; their
	// ports are zero for protocols without ports (ICMP and anything but TCP, UDP and SCTP).
	Src, Dst netip.AddrPort
	// TCPFlags holds the TCP flags (TCPFlagSYN, ...) of a TCP packet, zero otherwise.
	TCPFlags uint8
	// ICMPType and ICMPCode are the message type and code of an ICMP or ICMPv6 packet (by Proto, not
	// by IP version), zero otherwise.
	ICMPType, ICMPCode uint8
}

// IsICMP reports whether proto is ICMP or ICMPv6, whose packets carry a message type that Parse reads.
func IsICMP(proto uint8) bool { return proto == ProtoICMP || proto == ProtoICMPv6 }

// HasPorts reports whether packets of protocol proto carry ports that Parse reads.
func HasPorts(proto uint8) bool {
	return proto == ProtoTCP || proto == ProtoUDP || proto == ProtoSCTP
}

// Sentinel errors Parse wraps, so that a caller can count failures by kind with errors.Is.
var (
	// ErrTruncated: a header the parser needs ends beyond the captured bytes or the declared length.
	ErrTruncated = errors.New("truncated packet")
	// ErrMalformed: a header field is impossible (version, header length, total length, data offset).
	ErrMalformed = errors.New("malformed packet")
	// ErrFragment: a non-first fragment, which carries no L4 header and so no ports.
	ErrFragment = errors.New("non-first fragment")
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	// maxExtHeaders bounds the IPv6 extension header walk. Real packets carry a handful; the bound
	// keeps the walk cheap for a hostile chain of tiny headers.
	maxExtHeaders = 16
)

// Parse parses an IPv4 or IPv6 packet that starts at the IP header. It never retains b.
//
// Bytes after the length the IP header declares (link-layer padding) are ignored. The capture may be
// shorter than the declared length (NFQUEUE copies at most its copy range); that is fine as long as
// every header up to and including the L4 header was captured.
func Parse(b []byte) (Packet, error) {
	p, _, err := parse(b)
	return p, err
}

// ParseData is Parse that also returns the data of a TCP segment or UDP datagram: the bytes past its
// transport header, as far as b holds them (nil for other protocols), and whether b holds all the data
// the headers declare. The data is a slice of b.
func ParseData(b []byte) (Packet, []byte, bool, error) {
	p, d, err := parse(b)
	if err != nil || d.len == 0 {
		return p, nil, err == nil, err
	}
	start, end := min(d.off, len(b)), min(d.off+d.len, len(b))
	return p, b[start:end], end == d.off+d.len, nil
}

// span is where a packet's transport data lies: its offset in the packet and its declared length.
type span struct{ off, len int }

func parse(b []byte) (Packet, span, error) {
	if len(b) == 0 {
		return Packet{}, span{}, fmt.Errorf("%w: empty", ErrTruncated)
	}
	switch v := b[0] >> 4; v {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	default:
		return Packet{}, span{}, fmt.Errorf("%w: IP version %d", ErrMalformed, v)
	}
}

func parseIPv4(b []byte) (Packet, span, error) {
	if len(b) < ipv4MinHeader {
		return Packet{}, span{}, fmt.Errorf("%w: IPv4 header needs %d bytes, have %d", ErrTruncated, ipv4MinHeader, len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinHeader {
		return Packet{}, span{}, fmt.Errorf("%w: IPv4 header length %d below %d", ErrMalformed, ihl, ipv4MinHeader)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return Packet{}, span{}, fmt.Errorf("%w: IPv4 total length %d below header length %d", ErrMalformed, total, ihl)
	}
	if ihl > len(b) {
		return Packet{}, span{}, fmt.Errorf("%w: IPv4 header length %d, have %d bytes", ErrTruncated, ihl, len(b))
	}
	if frag := binary.BigEndian.Uint16(b[6:8]) & 0x1fff; frag != 0 {
		return Packet{}, span{}, fmt.Errorf("%w: IPv4 fragment offset %d", ErrFragment, int(frag)*8)
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	p, d, err := parseL4(b[ihl:min(len(b), total)], total-ihl, b[9], src, dst)
	d.off += ihl
	return p, d, err
}

func parseIPv6(b []byte) (Packet, span, error) {
	if len(b) < ipv6Header {
		return Packet{}, span{}, fmt.Errorf("%w: IPv6 header needs %d bytes, have %d", ErrTruncated, ipv6Header, len(b))
	}
	// A payload length of zero with a payload means a jumbogram or a BIG TCP packet: the length then
	// lives elsewhere, so the capture bounds the walk.
	declared := int(binary.BigEndian.Uint16(b[4:6]))
	if declared == 0 {
		declared = len(b) - ipv6Header
	}
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	payload := b[ipv6Header:min(len(b), ipv6Header+declared)]
	next, off, err := walkExtensions(payload, b[6])
	if err != nil {
		return Packet{}, span{}, err
	}
	p, d, err := parseL4(payload[off:], declared-off, next, src, dst)
	d.off += ipv6Header + off
	return p, d, err
}

// walkExtensions skips the IPv6 extension headers at the start of p, whose first header is next. It
// returns the upper-layer protocol and its offset in p.
func walkExtensions(p []byte, next uint8) (uint8, int, error) {
	off := 0
	for i := 0; ; i++ {
		var size int
		switch next {
		case 0, 43, 60:
			// Hop-by-hop, Routing, Destination options: the second byte counts 8-octet units after
			// the first eight. The walk follows exactly the kernel's list of extension headers
			// (ipv6_ext_hdr: these, Fragment, Authentication and No Next Header), so that the
			// protocol judged here is the one nftables matches (meta l4proto): Mobility (135), HIP
			// (139), Shim6 (140) and the experimental 253 and 254 are upper-layer protocols to the
			// kernel, and walking past them would judge a packet by ports the kernel never sees.
			if next == 0 && i != 0 {
				return 0, 0, fmt.Errorf("%w: IPv6 hop-by-hop header not first", ErrMalformed)
			}
			if len(p)-off < 2 {
				return 0, 0, fmt.Errorf("%w: IPv6 extension header %d at offset %d", ErrTruncated, next, off)
			}
			size = (int(p[off+1]) + 1) * 8
		case 51:
			// Authentication header: the length counts 4-octet units, minus 2.
			if len(p)-off < 2 {
				return 0, 0, fmt.Errorf("%w: IPv6 authentication header at offset %d", ErrTruncated, off)
			}
			size = (int(p[off+1]) + 2) * 4
		case 44:
			if len(p)-off < 8 {
				return 0, 0, fmt.Errorf("%w: IPv6 fragment header at offset %d", ErrTruncated, off)
			}
			if frag := binary.BigEndian.Uint16(p[off+2:off+4]) &^ 7; frag != 0 {
				return 0, 0, fmt.Errorf("%w: IPv6 fragment offset %d", ErrFragment, frag)
			}
			size = 8
		default:
			return next, off, nil
		}
		if i == maxExtHeaders {
			return 0, 0, fmt.Errorf("%w: more than %d IPv6 extension headers", ErrMalformed, maxExtHeaders)
		}
		if len(p)-off < size {
			return 0, 0, fmt.Errorf("%w: IPv6 extension header %d of %d bytes at offset %d", ErrTruncated, next, size, off)
		}
		next = p[off]
		off += size
	}
}

// parseL4 reads the ports (and TCP flags), or the ICMP type and code, from l4, the captured part of an
// upper-layer header whose declared length, from the IP header, is declared. The span it returns is
// the TCP or UDP data's, from the start of l4.
func parseL4(l4 []byte, declared int, proto uint8, src, dst netip.Addr) (Packet, span, error) {
	pkt := Packet{Proto: proto, Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0)}
	var need int
	switch proto {
	case ProtoTCP:
		need = 20
	case ProtoUDP:
		need = 8
	case ProtoSCTP:
		need = 12
	case ProtoICMP, ProtoICMPv6:
		need = 4 // type, code, checksum
	default:
		return pkt, span{}, nil
	}
	if len(l4) < need {
		return Packet{}, span{}, fmt.Errorf("%w: protocol %d header needs %d bytes, have %d", ErrTruncated, proto, need, len(l4))
	}
	var data span
	switch proto {
	case ProtoICMP, ProtoICMPv6:
		pkt.ICMPType, pkt.ICMPCode = l4[0], l4[1]
		return pkt, span{}, nil
	case ProtoTCP:
		doff := int(l4[12]>>4) * 4
		if doff < need || doff > declared {
			return Packet{}, span{}, fmt.Errorf("%w: TCP data offset %d outside %d-%d", ErrMalformed, doff, need, declared)
		}
		pkt.TCPFlags = l4[13]
		data = span{doff, declared - doff}
	case ProtoUDP:
		n := int(binary.BigEndian.Uint16(l4[4:6]))
		if n < need || n > declared {
			return Packet{}, span{}, fmt.Errorf("%w: UDP length %d outside %d-%d", ErrMalformed, n, need, declared)
		}
		data = span{need, n - need}
	}
	pkt.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
	pkt.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
	return pkt, data, nil
}
