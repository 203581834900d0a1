package nflog

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// received collects the UDP payloads of the logged packets (IPv4, no options).
type received struct {
	mu   sync.Mutex
	msgs []string
}

func (r *received) handle(p []byte) {
	if len(p) < 28 || p[0] != 0x45 {
		return
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, string(p[28:]))
	r.mu.Unlock()
}

func (r *received) has(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.msgs, msg)
}

// logged makes a namespace whose output hook copies UDP datagrams to port 9 to log group 5, whole,
// and binds the group there.
func logged(t *testing.T) (*netnstest.NS, *Log, *received) {
	testutil.RequireRoot(t)
	ns := netnstest.New(t)
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table inet t {\n chain out {\n type filter hook output priority 0;\n udp dport 9 log group 5 snaplen 65535 queue-threshold 1 accept\n }\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	var sink net.PacketConn
	if err := ns.Do(func() (err error) { sink, err = net.ListenPacket("udp", "127.0.0.1:9"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	r := &received{}
	l, err := Open(Options{NetNS: ns.Fd(), Group: 5, CopyLen: 0xffff}, r.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return ns, l, r
}

func send(t *testing.T, ns *netnstest.NS, msgs ...string) {
	t.Helper()
	c, err := ns.Dial("udp", "127.0.0.1:9", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range msgs {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncHandsOnWhatWasLogged: a packet sent (so logged) before Sync has been handled when Sync
// returns, with no Run at all: what Sync promises the verdict loop.
func TestSyncHandsOnWhatWasLogged(t *testing.T) {
	ns, l, r := logged(t)
	for i := range 50 {
		msg := fmt.Sprintf("sync-%d", i)
		send(t, ns, msg)
		l.Sync()
		if !r.has(msg) {
			t.Fatalf("%s was sent before Sync, yet not handled when Sync returned", msg)
		}
	}
	if n := l.Overruns(); n != 0 {
		t.Errorf("%d overruns", n)
	}
}

// TestRunHandsOnAsPacketsCome: Run hands on each packet, whole, while the packets pass; Close ends Run
// without an error.
func TestRunHandsOnAsPacketsCome(t *testing.T) {
	ns, l, r := logged(t)
	done := make(chan error, 1)
	go func() { done <- l.Run() }()
	big := strings.Repeat("x", 9000)
	send(t, ns, "run-1", "run-2", big)
	testutil.Eventually(t, 2*time.Second, func() error {
		for _, m := range []string{"run-1", "run-2", big} {
			if !r.has(m) {
				return fmt.Errorf("%.10s… not handled", m)
			}
		}
		return nil
	})
	l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}
