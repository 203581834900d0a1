package nfq

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestParsePacket(t *testing.T) {
	be := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	// struct nfqnl_msg_packet_hdr: packet id, hardware protocol, hook.
	hdr := append(be(42), 0x08, 0x00, 3)
	payload := []byte{0x45, 0, 0, 40}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: attrPacketHdr, Data: hdr}, {Type: attrMark, Data: be(0x2a0050)},
		{Type: attrOutDev, Data: be(7)}, {Type: attrPayload, Data: payload},
	})
	if err != nil {
		t.Fatal(err)
	}
	id, p, ok := parsePacket(attrs)
	if !ok || id != 42 || p.Mark != 0x2a0050 || p.OutDev != 7 || p.InDev != 0 || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("parsePacket = %d, %+v, %v; want id 42, mark 0x2a0050, out-device 7, the payload", id, p, ok)
	}
	attrs[len(attrs)-len(payload)] = 0x46 // the copy is the packet's own, not the receive buffer's
	if p.Payload[0] != 0x45 {
		t.Fatal("the payload shares the receive buffer")
	}

	// A message cut short keeps its id, to be answered, and loses its payload, to be refused.
	_, p, ok = parsePacket(append(attrs[:len(attrs):len(attrs)], 0xff, 0xff))
	if !ok || p.Payload != nil {
		t.Fatalf("a malformed message: ok %v, payload %v; want its id and no payload", ok, p.Payload)
	}
	if _, _, ok := parsePacket(attrs[8+len(hdr)+1:]); ok {
		t.Fatal("a message without a packet header has no id to answer")
	}
}

// TestDrainReadsUnpaddedMessages receives packet messages as the kernel sends them: the last message
// of a datagram ends with its payload, not padded to 4 bytes (a DNS answer's length is anything).
func TestDrainReadsUnpaddedMessages(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	message := func(id uint32, payload []byte) []byte {
		attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: attrPacketHdr, Data: append(binary.BigEndian.AppendUint32(nil, id), 0x08, 0, 3)},
		})
		if err != nil {
			t.Fatal(err)
		}
		attrs = binary.NativeEndian.AppendUint16(attrs, uint16(4+len(payload)))
		attrs = append(binary.NativeEndian.AppendUint16(attrs, attrPayload), payload...)
		m := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+nfgenmsgLen+len(attrs)))
		m = binary.NativeEndian.AppendUint16(m, unix.NFNL_SUBSYS_QUEUE<<8|msgPacket)
		m = append(m, make([]byte, 10)...) // flags, sequence, port
		return append(append(m, unix.AF_INET, unix.NFNETLINK_V0, 0, 7), attrs...)
	}
	odd := []byte{0x45, 1, 2, 3, 4}
	padded := append(message(1, odd), 0, 0, 0)
	for _, d := range [][]byte{message(5, odd), append(padded, message(6, odd[:2])...)} {
		if _, err := unix.Write(fds[0], d); err != nil {
			t.Fatal(err)
		}
	}
	s := &socket{buf: make([]byte, 1024)}
	got := s.drain(fds[1], nil, maxBurst, func() { t.Error("overrun") }, func(err error) { t.Error(err) })
	want := []received{{5, Packet{Payload: odd}}, {1, Packet{Payload: odd}}, {6, Packet{Payload: odd[:2]}}}
	if len(got) != len(want) {
		t.Fatalf("drained %d packets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].id != want[i].id || !bytes.Equal(got[i].pkt.Payload, want[i].pkt.Payload) {
			t.Errorf("packet %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
