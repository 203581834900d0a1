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

// received collects the UDP payloads of the logged packets (IPv4, no options), and what the copies
// say of the packets.
type received struct {
	mu      sync.Mutex
	msgs    []string
	lost    uint64
	wrongIf int // copies that did not name lo as their output interface, and no input one
}

func (r *received) handle(p Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost += uint64(p.Lost)
	if p.OutDev != loIndex || p.InDev != 0 {
		r.wrongIf++
	}
	if len(p.Payload) < 28 || p.Payload[0] != 0x45 {
		return
	}
	r.msgs = append(r.msgs, string(p.Payload[28:]))
}

// loIndex is the loopback interface's index in every namespace.
const loIndex = 1

func (r *received) has(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.msgs, msg)
}

// logged makes a namespace whose output hook copies UDP datagrams to port 9 to log group 5, whole,
// and binds the group there with the default options.
func logged(t *testing.T) (*netnstest.NS, *Log, *received) {
	return loggedWith(t, Options{})
}

// loggedWith is logged with o's ReadBuffer and Batch.
func loggedWith(t *testing.T, o Options) (*netnstest.NS, *Log, *received) {
	testutil.RequireRoot(t)
	ns := netnstest.New(t)
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	// A rule's queue threshold can only lower the group's batch: with Batch, the rule leaves it out.
	threshold := " queue-threshold 1"
	if o.Batch > 0 {
		threshold = ""
	}
	cmd.Stdin = strings.NewReader("table inet t {\n chain out {\n type filter hook output priority 0;\n udp dport 9 log group 5 snaplen 65535" +
		threshold + " accept\n }\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	var sink net.PacketConn
	if err := ns.Do(func() (err error) { sink, err = net.ListenPacket("udp", "127.0.0.1:9"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	r := &received{}
	l, err := Open(Options{NetNS: ns.Fd(), Group: 5, CopyLen: 0xffff, ReadBuffer: o.ReadBuffer, Batch: o.Batch}, r.handle)
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

// TestLostCopiesAreCounted: the copies the kernel could not fit in a full socket are counted, exactly,
// on the next copy that gets through (by the group's sequence numbers), and each copy names the
// interface the packet left by.
func TestLostCopiesAreCounted(t *testing.T) {
	ns, l, r := loggedWith(t, Options{ReadBuffer: 4096})
	const sent = 300
	msgs := make([]string, sent)
	for i := range msgs {
		msgs[i] = fmt.Sprintf("flood-%d", i)
	}
	send(t, ns, msgs...)
	l.Sync()
	send(t, ns, "last")
	l.Sync()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.msgs, "last") {
		t.Fatal("the copy sent after the socket was read was not handled")
	}
	if r.lost == 0 || l.Overruns() == 0 {
		t.Fatalf("%d copies handled of %d, %d counted lost, %d overruns: a 4 KiB socket should have overflowed",
			len(r.msgs), sent+1, r.lost, l.Overruns())
	}
	if got := uint64(len(r.msgs)) + r.lost; got != sent+1 {
		t.Errorf("%d handled + %d lost = %d, want the %d sent", len(r.msgs), r.lost, got, sent+1)
	}
	if r.wrongIf != 0 {
		t.Errorf("%d copies did not name lo as their output interface (and no input one)", r.wrongIf)
	}
}

// TestBatchHandsOnEveryCopy: with Batch, the kernel holds copies back for at most its timeout: a few
// packets, fewer than a batch, still reach Run.
func TestBatchHandsOnEveryCopy(t *testing.T) {
	ns, l, r := loggedWith(t, Options{Batch: 32})
	go func() { _ = l.Run() }()
	send(t, ns, "batch-1", "batch-2", "batch-3")
	testutil.Eventually(t, 2*time.Second, func() error {
		for _, m := range []string{"batch-1", "batch-2", "batch-3"} {
			if !r.has(m) {
				return fmt.Errorf("%s not handled", m)
			}
		}
		return nil
	})
}
