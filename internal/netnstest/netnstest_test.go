package netnstest

import (
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestPairCarriesTraffic(t *testing.T) {
	a, b := New(t), New(t)
	la, lb := Pair(t, a, b)
	l := b.Listen(t, "tcp", netip.AddrPortFrom(lb.Addr.Addr(), 0).String())
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := a.Dial("tcp", l.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", l.Addr(), la.Addr, err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hi" {
		t.Fatalf("read %q, want hi", got)
	}
	// The host namespace must not see the namespace's links.
	if out, _ := exec.Command("ip", "link", "show", la.Name).CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Fatalf("link %s visible on the host: %s", la.Name, out)
	}
}
