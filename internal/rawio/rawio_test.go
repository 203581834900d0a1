package rawio

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSendThenRecvOneDatagramEach(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 16)
	if _, err := Recv(fds[1], buf); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("Recv on an empty socket: %v, want EAGAIN", err)
	}
	for _, m := range []string{"first", "second"} {
		if err := Send(fds[0], []byte(m)); err != nil {
			t.Fatalf("Send %q: %v", m, err)
		}
	}
	for _, want := range []string{"first", "second"} {
		n, err := Recv(fds[1], buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("Recv = %q, %v; want %q", buf[:n], err, want)
		}
	}
	if err := Send(-1, []byte("x")); !errors.Is(err, unix.EBADF) {
		t.Fatalf("Send to a bad descriptor: %v, want EBADF", err)
	}
}
