package nlmsg

import (
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// message is a netlink message of type typ carrying data, unpadded.
func message(typ uint16, data []byte) []byte {
	m := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(data)))
	m = binary.NativeEndian.AppendUint16(m, typ)
	return append(append(m, make([]byte, 10)...), data...) // flags, sequence, port
}

// attr is an attribute of type typ carrying data, padded.
func attr(typ uint16, data []byte) []byte {
	a := binary.NativeEndian.AppendUint16(nil, uint16(unix.NLA_HDRLEN+len(data)))
	a = append(binary.NativeEndian.AppendUint16(a, typ), data...)
	return append(a, make([]byte, align(len(a), unix.NLA_ALIGNTO)-len(a))...)
}

// TestMessages: padded messages, an unpadded last one, and a message cut short, which ends the walk.
func TestMessages(t *testing.T) {
	first := append(message(1, []byte{1, 2, 3}), 0) // padded to 20
	d := append(first, message(2, []byte{4, 5})...)
	var got []string
	walk := func(d []byte) {
		got = got[:0]
		Messages(d, func(typ uint16, data []byte) { got = append(got, string(rune('0'+typ))+string(data)) })
	}
	walk(d)
	if want := []string{"1\x01\x02\x03", "2\x04\x05"}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	walk(d[:len(d)-1])
	if want := []string{"1\x01\x02\x03"}; !slices.Equal(got, want) {
		t.Errorf("with the last message cut short: %q, want %q", got, want)
	}
}

// TestAttrs: types lose their flags, data is read in place, and an attribute longer than what is left
// ends the walk as malformed.
func TestAttrs(t *testing.T) {
	b := append(attr(3|unix.NLA_F_NET_BYTEORDER, binary.BigEndian.AppendUint32(nil, 0x2a0050)), attr(9, []byte{0x45, 0})...)
	a := NewAttrs(b)
	if !a.Next() || a.Type != 3 || a.Uint32() != 0x2a0050 {
		t.Fatalf("first attribute: type %d, %#x", a.Type, a.Uint32())
	}
	if !a.Next() || a.Type != 9 || string(a.Data) != "\x45\x00" || &a.Data[0] != &b[len(b)-4] {
		t.Fatalf("second attribute: type %d, data %x (want it in place)", a.Type, a.Data)
	}
	if a.Next() || a.Malformed() {
		t.Fatalf("after the last: Next or Malformed")
	}
	a = NewAttrs(append(b, 0xff, 0xff))
	for a.Next() {
	}
	if !a.Malformed() {
		t.Error("a trailing attribute header that does not fit is not malformed")
	}
}
