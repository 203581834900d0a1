// Package nlmsg walks the netlink messages of a datagram, and their attributes, in place: no copy, no
// allocation. The sidecar's queue reader (sidecar/nfq) and log reader (sidecar/nflog) read every
// packet message netfilter sends them with it.
package nlmsg

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Messages calls fn with the type and the data (what follows the netlink header) of each message of
// datagram d, in order. Each message is padded to 4 bytes but the last, which may end unpadded
// (nfnetlink_queue's payload ends its message). A message whose length does not fit what is left ends
// the walk: nothing after it can be read.
func Messages(d []byte, fn func(typ uint16, data []byte)) {
	for len(d) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(d))
		if l < unix.NLMSG_HDRLEN || l > len(d) {
			return
		}
		typ, data := binary.NativeEndian.Uint16(d[4:]), d[unix.NLMSG_HDRLEN:l]
		d = d[min(align(l, unix.NLMSG_ALIGNTO), len(d)):]
		fn(typ, data)
	}
}

// Attrs walks a message's attributes:
//
//	for a := nlmsg.NewAttrs(b); a.Next(); {
//		switch a.Type { ... a.Data ... }
//	}
type Attrs struct {
	b []byte
	// Type is the current attribute's type, its nested and byte-order flags cleared.
	Type uint16
	// Data is the current attribute's data, in place.
	Data      []byte
	malformed bool
}

// NewAttrs walks the attributes in b.
func NewAttrs(b []byte) Attrs { return Attrs{b: b} }

// Next moves to the next attribute; false at the end, or at an attribute whose length does not fit.
func (a *Attrs) Next() bool {
	if len(a.b) == 0 {
		return false
	}
	n := 0
	if len(a.b) >= unix.NLA_HDRLEN {
		n = int(binary.NativeEndian.Uint16(a.b))
	}
	if n < unix.NLA_HDRLEN || n > len(a.b) {
		a.malformed = true
		return false
	}
	a.Type = binary.NativeEndian.Uint16(a.b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	a.Data = a.b[unix.NLA_HDRLEN:n]
	a.b = a.b[min(align(n, unix.NLA_ALIGNTO), len(a.b)):]
	return true
}

// Malformed says the walk ended at an attribute whose length does not fit.
func (a *Attrs) Malformed() bool { return a.malformed }

// Uint32 reads the current attribute as a big-endian 32-bit number (netfilter's byte order); 0 if it
// is too short.
func (a *Attrs) Uint32() uint32 {
	if len(a.Data) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(a.Data)
}

// align rounds n up to a multiple of to, a power of two.
func align(n, to int) int { return (n + to - 1) &^ (to - 1) }
