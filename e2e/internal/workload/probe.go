package workload

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// ping sends one ICMP echo request to addr from an ICMP datagram socket, the unprivileged kind
// (net.ipv4.ping_group_range), and says whether a reply came within timeout.
func ping(ctx context.Context, addr string, timeout time.Duration, out io.Writer) error {
	c, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		fmt.Fprintf(out, "ping error: %v\n", err)
		return nil
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: 1, Data: []byte("podwall")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.UDPAddr{IP: net.ParseIP(addr)}); err != nil {
		fmt.Fprintf(out, "ping error: %v\n", err)
		return nil
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			fmt.Fprintf(out, "ping timeout: %v\n", err)
			return nil
		}
		if m, err := icmp.ParseMessage(1, buf[:n]); err == nil && m.Type == ipv4.ICMPTypeEchoReply {
			fmt.Fprintln(out, "ping reply")
			return nil
		}
	}
}

// hold keeps one HTTP/1.1 connection to addr open and sends a request on it every interval, one line
// per answer, until the connection breaks (a line saying how) or ctx ends: a long-lived flow whose
// revocation a test can watch.
func hold(ctx context.Context, addr string, interval time.Duration, out io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fmt.Fprintf(out, "hold broken: %v\n", err)
		return nil
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for n := 1; ctx.Err() == nil; n++ {
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(c, "GET /hold HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
			fmt.Fprintf(out, "hold broken: %v\n", err)
			return nil
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			fmt.Fprintf(out, "hold broken: %v\n", err)
			return nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "hold ok %d\n", n)
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	return nil
}
