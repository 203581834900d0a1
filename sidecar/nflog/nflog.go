// Package nflog reads the packets that nftables' log expression copies to a netlink log group
// (nfnetlink_log) in a network namespace. Unlike a queue, the log releases the packet at once: the
// sidecar reads the pod's DNS answers this way without making the app wait for them, and the opening
// packets of the connections the kernel accepted from the policy's allow sets, to log them. Each copy
// carries the group's sequence number, so that the copies the kernel could not hand on (a full socket)
// are counted exactly (Packet.Lost).
//
// What the app may do with a packet the kernel logged happens after the copy is in the log socket, so
// that Sync, which reads and hands on everything the socket holds, lets a reader catch up with the
// packets the app has seen: the verdict loop syncs before it judges a connection by the names DNS
// answers gave.
package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/internal/nlmsg"
	"podwall.io/podwall/internal/rawio"
)

// Options configure Open.
type Options struct {
	// NetNS is a descriptor of the network namespace to read the group in; 0 means the current one.
	NetNS int
	// Group is the log group the rules copy to (the log expression's group).
	Group uint16
	// CopyLen is how much of each packet the kernel copies (the rule's snaplen bounds it too).
	CopyLen uint32
	// ReadBuffer is the socket's receive buffer in bytes (default 4 MiB); the copies the kernel
	// cannot fit in it are lost, and counted (Log.Overruns, Packet.Lost).
	ReadBuffer int
	// Batch lets the kernel gather up to Batch copies, for at most 10 ms, before it sends them: fewer
	// wake-ups for a reader that need not see each packet at once. Zero sends each at once (a rule's
	// own queue threshold can only lower it).
	Batch uint32
}

// Packet is one logged packet. Payload, from the L3 header, is only valid during the Handler's call.
type Packet struct {
	Payload []byte
	// Mark is the packet's mark as the rule that logged it saw it.
	Mark uint32
	// InDev and OutDev are the input and output interfaces' indexes, 0 for none.
	InDev, OutDev uint32
	// Lost counts the copies the kernel could not deliver between the previous packet and this one.
	Lost uint32
}

// Handler takes one logged packet.
type Handler func(p Packet)

// Log is one bound log group.
type Log struct {
	conn *netlink.Conn
	raw  syscall.RawConn
	fn   Handler

	// mu serializes reading the socket and handing packets on, so that Sync returns only once every
	// packet that was in the socket has been handled.
	mu       sync.Mutex
	buf      []byte
	seq      uint32 // the sequence number the next copy should carry
	overruns atomic.Uint64
	closed   atomic.Bool
}

// The parts of linux/netfilter/nfnetlink_log.h this package uses.
const (
	msgPacket        = 0  // NFULNL_MSG_PACKET
	msgConfig        = 1  // NFULNL_MSG_CONFIG
	attrMark         = 2  // NFULA_MARK
	attrInDev        = 4  // NFULA_IFINDEX_INDEV
	attrOutDev       = 5  // NFULA_IFINDEX_OUTDEV
	attrPayload      = 9  // NFULA_PAYLOAD
	attrSeq          = 12 // NFULA_SEQ
	cfgCmd           = 1  // NFULA_CFG_CMD
	cfgMode          = 2  // NFULA_CFG_MODE
	cfgTimeout       = 4  // NFULA_CFG_TIMEOUT, in hundredths of a second
	cfgQThresh       = 5  // NFULA_CFG_QTHRESH
	cfgFlags         = 6  // NFULA_CFG_FLAGS
	flagSeq          = 1  // NFULNL_CFG_F_SEQ
	cmdBind          = 1  // NFULNL_CFG_CMD_BIND
	copyPacket       = 2  // NFULNL_COPY_PACKET
	defaultBuffer    = 4 << 20
	nfgenmsgLen      = 4
	maxMessageLength = 1 << 17 // one receive: a packet of 64 KiB and its attributes, with room
)

// Open binds the log group in the namespace and asks for packets copied up to CopyLen bytes; fn
// handles each, from Run or Sync. It fails if another socket bound the group already.
func Open(o Options, fn Handler) (*Log, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: o.NetNS})
	if err != nil {
		return nil, fmt.Errorf("nflog: dial: %w", err)
	}
	l := &Log{conn: conn, fn: fn, buf: make([]byte, maxMessageLength)}
	if err := l.configure(o); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nflog group %d: %w", o.Group, err)
	}
	return l, nil
}

func (l *Log) configure(o Options) error {
	mode := make([]byte, 6) // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode, _pad; }
	binary.BigEndian.PutUint32(mode, o.CopyLen)
	mode[4] = copyPacket
	attrs := []netlink.Attribute{{Type: cfgCmd, Data: []byte{cmdBind}}, {Type: cfgMode, Data: mode},
		// Each copy carries the group's sequence number, so that a gap counts the copies lost.
		{Type: cfgFlags, Data: binary.BigEndian.AppendUint16(nil, flagSeq)}}
	if o.Batch > 1 {
		attrs = append(attrs, netlink.Attribute{Type: cfgQThresh, Data: binary.BigEndian.AppendUint32(nil, o.Batch)},
			netlink.Attribute{Type: cfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 1)})
	}
	for _, attr := range attrs {
		data, err := netlink.MarshalAttributes([]netlink.Attribute{attr})
		if err != nil {
			return err
		}
		// struct nfgenmsg: family (AF_UNSPEC), version, res_id (the group, big-endian).
		hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(o.Group >> 8), byte(o.Group)}
		_, err = l.conn.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | msgConfig),
				Flags: netlink.Request | netlink.Acknowledge},
			Data: append(hdr, data...),
		})
		if err != nil {
			return err
		}
	}
	var err error
	if l.raw, err = l.conn.SyscallConn(); err != nil {
		return err
	}
	size := o.ReadBuffer
	if size == 0 {
		size = defaultBuffer
	}
	var serr error
	if err := l.raw.Control(func(fd uintptr) {
		// SO_RCVBUFFORCE passes rmem_max: the sidecar holds CAP_NET_ADMIN.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		return err
	}
	return serr
}

// Run hands on packets as they come, until Close.
func (l *Log) Run() error {
	err := l.raw.Read(func(fd uintptr) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.drain(int(fd)) != nil
	})
	if l.closed.Load() {
		return nil
	}
	return err
}

// Sync hands on every packet the socket holds now before it returns, so that a packet logged before
// the call has been handled. It waits for a Run pass that is handing packets on.
func (l *Log) Sync() {
	_ = l.raw.Control(func(fd uintptr) {
		l.mu.Lock()
		defer l.mu.Unlock()
		_ = l.drain(int(fd))
	})
}

// Overruns counts the times the socket's buffer overflowed: the kernel released packets whose copies
// were lost.
func (l *Log) Overruns() uint64 { return l.overruns.Load() }

// Close unbinds the group; Run returns.
func (l *Log) Close() error {
	l.closed.Store(true)
	return l.conn.Close()
}

// drain reads and handles what the socket holds, until it holds nothing (nil) or fails. l.mu is held.
func (l *Log) drain(fd int) error {
	for {
		n, err := rawio.Recv(fd, l.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.ENOBUFS):
			l.overruns.Add(1)
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		}
		nlmsg.Messages(l.buf[:n], func(typ uint16, data []byte) {
			if typ != unix.NFNL_SUBSYS_ULOG<<8|msgPacket || len(data) < nfgenmsgLen {
				return
			}
			if p, ok := l.packet(data[nfgenmsgLen:]); ok {
				l.fn(p)
			}
		})
	}
}

// packet reads a packet message's attributes; a message without a payload is none. l.mu is held.
func (l *Log) packet(attrs []byte) (Packet, bool) {
	var p Packet
	a := nlmsg.NewAttrs(attrs)
	for a.Next() {
		switch a.Type {
		case attrPayload:
			p.Payload = a.Data
		case attrMark:
			p.Mark = a.Uint32()
		case attrInDev:
			p.InDev = a.Uint32()
		case attrOutDev:
			p.OutDev = a.Uint32()
		case attrSeq:
			seq := a.Uint32()
			p.Lost = seq - l.seq
			l.seq = seq + 1
		}
	}
	return p, !a.Malformed() && p.Payload != nil
}
