package ruleset

import (
	"cmp"
	"encoding/binary"
	"net/netip"
)

// addr is an address as a 128-bit number, an IPv4 address in the low 32 bits. Unlike netip.Addr it
// holds no pointer, so sorting tens of thousands of them costs no garbage-collector write barriers.
type addr struct{ hi, lo uint64 }

func addrOf(a netip.Addr) addr {
	if a.Is4() {
		v := a.As4()
		return addr{lo: uint64(binary.BigEndian.Uint32(v[:]))}
	}
	v := a.As16()
	return addr{binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])}
}

func (a addr) compare(b addr) int { return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo)) }

func (a addr) less(b addr) bool { return a.compare(b) < 0 }

// next returns a+1; ok is false past the last 128-bit address. (An IPv4 address's next may leave the
// IPv4 range; it is then only a boundary that no address reaches.)
func (a addr) next() (n addr, ok bool) {
	n = a
	n.lo++
	if n.lo == 0 {
		n.hi++
	}
	return n, n != addr{}
}

func (a addr) prev() addr {
	if a.lo == 0 {
		a.hi--
	}
	a.lo--
	return a
}

// lastAddr is the last 128-bit address: only an IPv6 range can reach it.
var lastAddr = addr{^uint64(0), ^uint64(0)}

// appendAddr appends a's bytes for its family.
func appendAddr(b []byte, a addr, v6 bool) []byte {
	if v6 {
		b = binary.BigEndian.AppendUint64(b, a.hi)
		return binary.BigEndian.AppendUint64(b, a.lo)
	}
	return binary.BigEndian.AppendUint32(b, uint32(a.lo))
}

// prefixRange returns the first and last address of a prefix.
func prefixRange(p netip.Prefix) (addr, addr) {
	lo := addrOf(p.Masked().Addr())
	host := p.Addr().BitLen() - p.Bits() // bits below the prefix
	hi := lo
	switch {
	case host >= 128:
		hi = lastAddr
	case host >= 64:
		hi.lo = ^uint64(0)
		hi.hi |= 1<<(host-64) - 1
	default:
		hi.lo |= 1<<host - 1
	}
	return lo, hi
}
