package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/internal/nlmsg"
	"podwall.io/podwall/internal/rawio"
)

// The parts of linux/netfilter/nfnetlink_queue.h this package uses.
const (
	msgPacket        = 0  // NFQNL_MSG_PACKET
	msgVerdict       = 1  // NFQNL_MSG_VERDICT
	msgConfig        = 2  // NFQNL_MSG_CONFIG
	attrPacketHdr    = 1  // NFQA_PACKET_HDR
	attrVerdictHdr   = 2  // NFQA_VERDICT_HDR
	attrMark         = 3  // NFQA_MARK
	attrInDev        = 5  // NFQA_IFINDEX_INDEV
	attrOutDev       = 6  // NFQA_IFINDEX_OUTDEV
	attrPayload      = 10 // NFQA_PAYLOAD
	cfgCmd           = 1  // NFQA_CFG_CMD
	cfgParams        = 2  // NFQA_CFG_PARAMS
	cfgQueueMaxLen   = 3  // NFQA_CFG_QUEUE_MAXLEN
	cfgMask          = 4  // NFQA_CFG_MASK
	cfgFlags         = 5  // NFQA_CFG_FLAGS
	cmdBind          = 1  // NFQNL_CFG_CMD_BIND
	copyPacket       = 2  // NFQNL_COPY_PACKET
	flagFailOpen     = 1  // NFQA_CFG_F_FAIL_OPEN
	nfgenmsgLen      = 4
	verdictMsgLen    = unix.NLMSG_HDRLEN + nfgenmsgLen + 4 + 8 // header, nfgenmsg, NFQA_VERDICT_HDR
	markAttrLen      = 4 + 4                                   // NFQA_MARK
	messageOverhead  = 4096                                    // a packet message's headers and attributes besides its payload, with room
	packetHdrMinSize = 4                                       // struct nfqnl_msg_packet_hdr starts with the packet id
)

// socket is one queue's netlink socket. Its reader receives packet messages straight from the socket
// into one buffer, several per wake-up when the kernel has queued several, and copies out of each only
// what the Handler reads (the payload's first CopyLen bytes); verdicts are written as one short
// message each, built on the stack. Nothing else reads or writes the socket once it is bound.
type socket struct {
	conn *netlink.Conn
	raw  syscall.RawConn
	num  uint16
	buf  []byte
}

// openSocket binds queue num in the namespace o.NetNS with o's copy length, length bound and flags.
// It fails if another socket bound the queue already.
func openSocket(o *Options, num uint16) (*socket, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: o.NetNS})
	if err != nil {
		return nil, fmt.Errorf("open queue %d: %w", num, err)
	}
	s := &socket{conn: conn, num: num, buf: make([]byte, int(o.CopyLen)+messageOverhead)}
	if err := s.configure(o); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bind queue %d: %w", num, err)
	}
	return s, nil
}

// configure binds the queue and sets its copy mode, length bound and flags, each acknowledged.
func (s *socket) configure(o *Options) error {
	params := binary.BigEndian.AppendUint32(nil, o.CopyLen) // struct nfqnl_msg_config_params
	params = append(params, copyPacket)
	flags := uint32(0)
	if o.FailOpen {
		flags |= flagFailOpen
	}
	// struct nfqnl_msg_config_cmd: command, pad, the protocol family (ignored by kernels since 3.8).
	for _, attrs := range [][]netlink.Attribute{
		{{Type: cfgCmd, Data: []byte{cmdBind, 0, 0, unix.AF_INET}}},
		{{Type: cfgParams, Data: params}},
		{{Type: cfgFlags, Data: binary.BigEndian.AppendUint32(nil, flags)},
			{Type: cfgMask, Data: binary.BigEndian.AppendUint32(nil, flagFailOpen)},
			{Type: cfgQueueMaxLen, Data: binary.BigEndian.AppendUint32(nil, o.MaxQueueLen)}},
	} {
		data, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		if _, err := s.conn.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_QUEUE<<8 | msgConfig),
				Flags: netlink.Request | netlink.Acknowledge},
			Data: append(s.genmsg(nil), data...),
		}); err != nil {
			return err
		}
	}
	raw, err := s.conn.SyscallConn()
	s.raw = raw
	return err
}

// genmsg appends struct nfgenmsg: family (AF_UNSPEC), version, res_id (the queue, big-endian).
func (s *socket) genmsg(b []byte) []byte {
	return append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(s.num>>8), byte(s.num))
}

// received is one packet message: the packet's id and what the Handler sees of it.
type received struct {
	id  uint32
	pkt Packet
}

// receive waits until the socket holds packets and appends them to b, at most max. It fails once the
// socket is closed or its read deadline passed (stopReading). An overrun of the socket's buffer is
// counted by overrun; any other receive error goes to onError.
func (s *socket) receive(b []received, max int, overrun func(), onError func(error)) ([]received, error) {
	err := s.raw.Read(func(fd uintptr) bool {
		b = s.drain(int(fd), b, max, overrun, onError)
		return len(b) > 0 // or wait until the socket is readable
	})
	return b, err
}

// rest appends to b what the socket holds, at most max, without waiting, whatever its read deadline.
func (s *socket) rest(b []received, max int, overrun func(), onError func(error)) []received {
	_ = s.raw.Control(func(fd uintptr) { b = s.drain(int(fd), b, max, overrun, onError) })
	return b
}

// drain appends to b the packets the socket holds, one receive each, until it holds none or b has max.
func (s *socket) drain(fd int, b []received, max int, overrun func(), onError func(error)) []received {
	for len(b) < max {
		n, err := rawio.Recv(fd, s.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return b
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			overrun()
			continue
		case err != nil:
			onError(err)
			return b
		}
		nlmsg.Messages(s.buf[:n], func(typ uint16, data []byte) {
			if typ != unix.NFNL_SUBSYS_QUEUE<<8|msgPacket || len(data) < nfgenmsgLen {
				return
			}
			if id, p, ok := parsePacket(data[nfgenmsgLen:]); ok {
				b = append(b, received{id, p})
			}
		})
	}
	return b
}

// stopReading ends receive: the call waiting now and every later one fail.
func (s *socket) stopReading() error { return s.conn.SetReadDeadline(time.Unix(1, 0)) }

// parsePacket reads a packet message's attributes: its id (ok is false without one), mark, devices
// and a copy of its payload. A message whose attributes do not parse keeps its id but loses its
// payload, so that the Handler refuses it rather than leave it unanswered.
func parsePacket(attrs []byte) (id uint32, p Packet, ok bool) {
	a := nlmsg.NewAttrs(attrs)
	for a.Next() {
		switch a.Type {
		case attrPacketHdr:
			if len(a.Data) >= packetHdrMinSize {
				id, ok = binary.BigEndian.Uint32(a.Data), true
			}
		case attrMark:
			p.Mark = a.Uint32()
		case attrInDev:
			p.InDev = a.Uint32()
		case attrOutDev:
			p.OutDev = a.Uint32()
		case attrPayload:
			p.Payload = append([]byte(nil), a.Data...)
		}
	}
	if a.Malformed() {
		p.Payload = nil
	}
	return id, p, ok
}

// verdict answers packet id with r.
func (s *socket) verdict(id uint32, r Reply) error {
	var buf [verdictMsgLen + markAttrLen]byte
	b := buf[:unix.NLMSG_HDRLEN]
	b = s.genmsg(b)
	b = appendAttr(b, attrVerdictHdr, uint32(r.Action), id)
	if r.Mark != 0 {
		b = appendAttr(b, attrMark, r.Mark)
	}
	// struct nlmsghdr: length, type, flags (a request, no acknowledgement), sequence and port 0.
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.NFNL_SUBSYS_QUEUE<<8|msgVerdict)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST)
	var serr error
	if err := s.raw.Write(func(fd uintptr) bool {
		serr = rawio.Send(int(fd), b) // an unconnected netlink socket writes to the kernel
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	return serr
}

// appendAttr appends a netlink attribute of type typ holding the big-endian words vs.
func appendAttr(b []byte, typ uint16, vs ...uint32) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+4*len(vs)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// close unbinds the queue: the kernel drops the packets it still holds.
func (s *socket) close() error { return s.conn.Close() }
