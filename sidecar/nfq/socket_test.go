package nfq

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
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
