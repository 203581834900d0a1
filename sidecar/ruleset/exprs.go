package ruleset

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Registers. A concatenated key is loaded field by field into consecutive 32-bit registers, each
// field rounded up to four bytes; lookups read it from the first.
const (
	regScratch = unix.NFT_REG_1    // one value; NFT_REG_1 spans the 32-bit registers 8-11
	regKey     = unix.NFT_REG_1    // an address-led key starts here
	regKey32   = unix.NFT_REG32_00 // a "protocol . port" key starts here
)

// Values the rules compare with.
const (
	loIndex    = 1 // the loopback device is interface 1 in every network namespace
	protoTCP   = unix.IPPROTO_TCP
	protoICMP  = unix.IPPROTO_ICMP
	protoICMP6 = unix.IPPROTO_ICMPV6
	ctOriginal = 0 // IP_CT_DIR_ORIGINAL: the direction the connection was opened in
)

// native32 encodes v as nftables compares 32-bit meta, mark and conntrack values: in the host's byte
// order (not the network's, and not little-endian on a big-endian host).
func native32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func cmpEq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

func verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

func jump(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// metaIs matches a one-byte (protocol numbers) or four-byte (interface index) meta key.
func metaIs(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: regScratch}, cmpEq(regScratch, data)}
}

func l4protoIs(p uint8) []expr.Any { return metaIs(expr.MetaKeyL4PROTO, []byte{p}) }

func l4protoNot(p uint8) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regScratch},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regScratch, Data: []byte{p}}}
}

// notICMP matches packets that are neither ICMP nor ICMPv6.
func notICMP() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regScratch},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regScratch, Data: []byte{protoICMP}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regScratch, Data: []byte{protoICMP6}}}
}

// ICMPv6 message types the kernel's conntrack leaves untracked (nf_conntrack_proto_icmpv6.c,
// noct_valid_new): MLD and neighbour discovery. Redirect (137) is not among them: conntrack finds it
// invalid, and the prelude drops it.
const (
	icmp6MLDQuery    = 130 // RFC 2710 §3.6, RFC 3810 §5.1
	icmp6MLDReport   = 131 // RFC 2710 §3.6
	icmp6MLDDone     = 132 // RFC 2710 §3.6
	icmp6RouterSol   = 133 // RFC 4861 §4.1
	icmp6NeighAdvert = 136 // RFC 4861 §4.4
	icmp6MLDv2Report = 143 // RFC 3810 §5.2
)

// ndAndMLD returns the matches (one per rule) for the untracked ICMPv6 that IPv6 needs, each limited
// as the RFC's receiver validates it, so that no other ICMPv6 passes untracked:
//
//   - Neighbour discovery, router solicitation to neighbour advertisement (133-136): hop limit 255
//     (RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2: "The IP Hop Limit field has a value of 255", proof that
//     no router forwarded it). The addresses are not limited: address resolution and unreachability
//     detection send solicitations and advertisements between unicast addresses of any scope.
//   - MLD queries, reports and done (130-132, 143): hop limit 1 to a multicast destination, from a
//     link-local source (RFC 2710 §3, RFC 3810 §5 and §6.2) or, for a report, the unspecified
//     address, which a node uses before its link-local address is ready (RFC 3590 §4, RFC 3810 §5.2.13).
func ndAndMLD() [][]expr.Any {
	untracked := append(nfprotoIs(true), append(l4protoIs(protoICMP6), ctStateIn(expr.CtStateBitUNTRACKED)...)...)
	typeIn := func(lo, hi byte) []expr.Any {
		load := &expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}
		if lo == hi {
			return []expr.Any{load, cmpEq(regScratch, []byte{lo})}
		}
		return []expr.Any{load, &expr.Range{Op: expr.CmpOpEq, Register: regScratch, FromData: []byte{lo}, ToData: []byte{hi}}}
	}
	hopLimit := func(v byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
			cmpEq(regScratch, []byte{v}),
		}
	}
	// The first 10 bits of fe80::/10 and the first byte of ff00::/8.
	linkLocalSrc := []expr.Any{
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 2},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
		cmpEq(regScratch, []byte{0xfe, 0x80}),
	}
	unspecifiedSrc := []expr.Any{
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		cmpEq(regScratch, make([]byte, 16)),
	}
	multicastDst := []expr.Any{
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 1},
		cmpEq(regScratch, []byte{0xff}),
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	mld := cat(untracked, hopLimit(1), multicastDst)
	return [][]expr.Any{
		cat(untracked, typeIn(icmp6RouterSol, icmp6NeighAdvert), hopLimit(255)),
		cat(mld, typeIn(icmp6MLDQuery, icmp6MLDDone), linkLocalSrc),
		cat(mld, typeIn(icmp6MLDv2Report, icmp6MLDv2Report), linkLocalSrc),
		cat(mld, typeIn(icmp6MLDReport, icmp6MLDReport), unspecifiedSrc),
		cat(mld, typeIn(icmp6MLDv2Report, icmp6MLDv2Report), unspecifiedSrc),
	}
}

func nfprotoIs(v6 bool) []expr.Any {
	if v6 {
		return metaIs(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV6})
	}
	return metaIs(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4})
}

// markIs matches packets whose podwall mark bits equal v.
func markIs(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regScratch},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 4, Mask: native32(MarkMask), Xor: native32(0)},
		cmpEq(regScratch, native32(v)),
	}
}

// setMark sets the podwall bits of the packet mark to v (0: clears them) and keeps the others.
func setMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regScratch},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 4, Mask: native32(^MarkMask), Xor: native32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regScratch, SourceRegister: true},
	}
}

// ctStateIn matches packets whose conntrack state is one of bits.
func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: regScratch},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 4, Mask: native32(bits), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regScratch, Data: native32(0)},
	}
}

// tcpSynOnly matches a TCP segment whose flags among SYN, ACK, RST and FIN are SYN alone: the opening
// segment of a connection. Unlike "ct state new" it lets no opening segment slip past the queue.
func tcpSynOnly() []expr.Any { return tcpSyn(expr.CmpOpEq) }

// tcpNotSynOnly matches every other TCP segment: one that cannot open a connection.
func tcpNotSynOnly() []expr.Any { return tcpSyn(expr.CmpOpNeq) }

func tcpSyn(op expr.CmpOp) []expr.Any {
	const fin, syn, rst, ack = 0x01, 0x02, 0x04, 0x10
	return append(l4protoIs(protoTCP),
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 1, Mask: []byte{syn | ack | rst | fin}, Xor: []byte{0}},
		&expr.Cmp{Op: op, Register: regScratch, Data: []byte{syn}},
	)
}

// ctMarkIs matches packets whose connection mark's podwall bits equal v.
func ctMarkIs(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: regScratch},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 4, Mask: native32(MarkMask), Xor: native32(0)},
		cmpEq(regScratch, native32(v)),
	}
}

// setCtMark records v (MarkAllow or MarkSelf) in the connection's mark without touching the mark bits
// that belong to others (a mesh proxy's TPROXY mark, say): ct mark = (ct mark &^ MarkMask) ^ v.
func setCtMark(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: regScratch},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 4, Mask: native32(^MarkMask), Xor: native32(v)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: regScratch, SourceRegister: true},
	}
}

// markOrigPort copies the connection's original destination port, in host order, into the packet mark:
// user space reads it from the queued packet, since at input the new conntrack entry is not confirmed
// yet and cannot be looked up, and this kernel gives NFQUEUE no conntrack attributes.
func markOrigPort() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyPROTODST, Direction: ctOriginal, Register: regScratch},
		&expr.Byteorder{SourceRegister: regScratch, DestRegister: regScratch, Op: expr.ByteorderNtoh, Len: 2, Size: 2},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regScratch, SourceRegister: true},
	}
}

// reject refuses fast: a TCP reset for TCP, ICMP(v6) administratively prohibited otherwise. A dropped
// SYN would leave the client retrying for over two minutes.
func reject(tcp bool) []expr.Any {
	if tcp {
		return append(l4protoIs(protoTCP), tcpReset)
	}
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}

// tcpReset refuses a packet already known to be TCP.
var tcpReset = &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}

// keyKind says which packet fields make up a lookup key.
type keyKind int

const (
	// keyEgress is "daddr . l4proto . dport" of the packet.
	keyEgress keyKind = iota
	// keyIngress is "saddr . l4proto . original dport": a mesh proxy's inbound redirect is judged on
	// the port the peer asked for.
	keyIngress
	// keyReply is "saddr . l4proto . sport": the server a reply comes from.
	keyReply
)

// loadKey loads a key of the family into registers; it starts with a family check, since the
// address fields read the packet or the conntrack entry as that family.
func loadKey(k keyKind, v6 bool) []expr.Any {
	addrLen, next := uint32(4), uint32(unix.NFT_REG32_01)
	saddr, daddr := uint32(12), uint32(16)
	if v6 {
		addrLen, next = 16, unix.NFT_REG32_04
		saddr, daddr = 8, 24
	}
	regProto, regPort := next, next+1
	ex := nfprotoIs(v6)
	addr := daddr
	if k != keyEgress {
		addr = saddr
	}
	ex = append(ex, &expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: addr, Len: addrLen})
	ex = append(ex, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regProto})
	switch k {
	case keyEgress:
		return append(ex, &expr.Payload{DestRegister: regPort, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	case keyReply:
		return append(ex, &expr.Payload{DestRegister: regPort, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
	}
	return append(ex, &expr.Ct{Key: expr.CtKeyPROTODST, Direction: ctOriginal, Register: regPort})
}

func lookup(set string, reg uint32) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg, SetName: set}
}

// loadProtoOrigPort loads "l4proto . original dport" for the loopback deny set.
func loadProtoOrigPort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regKey32},
		&expr.Ct{Key: expr.CtKeyPROTODST, Direction: ctOriginal, Register: regKey32 + 1},
	}
}

// tcpDportIn matches TCP packets whose destination port is in a port set.
func tcpDportIn(set string) []expr.Any {
	return append(l4protoIs(protoTCP),
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		lookup(set, regScratch))
}

// queueExpr sends the packet to user space: the native queue expression, or the xtables NFQUEUE
// target (revision 3) through nftables' compat layer on kernels without nft_queue.
func queueExpr(o Options) expr.Any {
	var flags uint16
	if o.FailOpen {
		flags |= unix.NFT_QUEUE_FLAG_BYPASS
	}
	if o.QueueCount > 1 {
		flags |= unix.NFT_QUEUE_FLAG_CPU_FANOUT
	}
	if o.Queue == QueueNative {
		return &expr.Queue{Num: o.QueueNum, Total: o.QueueCount, Flag: expr.QueueFlag(flags)}
	}
	// struct xt_NFQ_info_v3 { __u16 queuenum, queues_total, flags, cpu_fanout padding }: host order.
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], o.QueueNum)
	binary.NativeEndian.PutUint16(info[2:], o.QueueCount)
	binary.NativeEndian.PutUint16(info[4:], flags)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}
