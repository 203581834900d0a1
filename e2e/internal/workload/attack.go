package workload

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// forgedMarks are the packet marks a compromised app would try: the sidecar's own mark, the verdict
// loop's allow mark, both with the deny mark, every podwall bit, every bit. The values are podwall's
// (sidecar/ruleset); an attacker reads them from the source as easily.
var forgedMarks = []uint32{0x00100000, 0x00200000, 0x00600000, 0x00f00000, 0xffffffff}

// attack plays a compromised app against its own pod's firewall, one line per attempt: it sets each
// forged mark on a socket (SO_MARK, which needs CAP_NET_RAW) and, where the kernel lets it, connects to
// addr and sends an HTTP request naming the mark, so that a server that received it logs it; then it
// tries to open a packet socket (AF_PACKET, which never crosses the inet hooks). It never fails: what
// the kernel and the firewall answered is the result.
func attack(ctx context.Context, addr string, out io.Writer) error {
	for _, mark := range forgedMarks {
		d := net.Dialer{Timeout: 3 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			fmt.Fprintf(out, "attack mark=%#x refused: %v\n", mark, err)
			continue
		}
		fmt.Fprintf(c, "GET /forged-mark-%#x HTTP/1.0\r\n\r\n", mark)
		c.Close()
		fmt.Fprintf(out, "attack mark=%#x connected\n", mark)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		fmt.Fprintf(out, "attack packet-socket refused: %v\n", err)
		return nil
	}
	unix.Close(fd)
	fmt.Fprintln(out, "attack packet-socket opened")
	return nil
}
