package nfq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

const (
	queueNum = 7
	denyMark = 0x00200000
)

// setup makes a namespace whose TCP SYNs to port 8000 over loopback are queued (through iptables-nft, the
// same compat NFQUEUE target the sidecar uses on this kernel) and whose packets carrying denyMark are
// reset, like the sidecar's ruleset does after an NF_REPEAT. It returns the namespace and the listener.
func setup(t *testing.T) (*netnstest.NS, net.Listener) {
	ns := netnstest.New(t)
	ns.Exec(t, "iptables", "-A", "OUTPUT", "-o", "lo", "-m", "mark", "--mark", fmt.Sprint(denyMark), "-p", "tcp",
		"-j", "REJECT", "--reject-with", "tcp-reset")
	ns.Exec(t, "iptables", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "--dport", "8000", "--syn", "-j", "NFQUEUE",
		"--queue-num", fmt.Sprint(queueNum))
	return ns, ns.Serve(t, "127.0.0.1:8000")
}

func serve(t *testing.T, ns *netnstest.NS, m *Metrics, stall time.Duration, h Handler) {
	serveWith(t, Options{NetNS: ns.Fd(), QueueNum: queueNum, StallTimeout: stall, Metrics: m}, h)
}

func serveWith(t *testing.T, o Options, h Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	loop, err := Bind(ctx, o, h, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { loop.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestVerdicts(t *testing.T) {
	ns, l := setup(t)
	verdict := make(chan Reply, 1)
	seen := make(chan Packet, 1)
	serve(t, ns, nil, 0, func(p Packet) Reply {
		seen <- Packet{Mark: p.Mark, InDev: p.InDev, OutDev: p.OutDev, Payload: append([]byte(nil), p.Payload...)}
		return <-verdict
	})
	verdict <- Reply{Action: nfqueue.NfAccept}
	c, err := ns.Dial("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("accepted connection: %v", err)
	}
	c.Close()
	p := <-seen
	if p.OutDev != 1 || len(p.Payload) < 40 || p.Payload[0]>>4 != 4 {
		t.Fatalf("queued packet: outdev %d, %d payload bytes; want loopback and an IPv4 header", p.OutDev, len(p.Payload))
	}

	verdict <- Reply{Action: nfqueue.NfRepeat, Mark: denyMark}
	start := time.Now()
	_, err = ns.Dial("tcp", l.Addr().String(), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("denied connection: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("denied connection took %v to fail, want < 100ms", d)
	}
	<-seen
}

func TestWatchdogReplacesAStuckWorker(t *testing.T) {
	ns, l := setup(t)
	m := NewMetrics(nil)
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	var served atomic.Bool
	serve(t, ns, m, 200*time.Millisecond, func(Packet) Reply {
		if !served.Swap(true) { // the first packet hangs the handler; the rebound worker serves the SYN's retransmission
			<-hang
		}
		return Reply{Action: nfqueue.NfAccept}
	})
	c, err := ns.Dial("tcp", l.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("connection through a recovered queue: %v", err)
	}
	c.Close()
	if got := promtest.ToFloat64(m.Restarts); got != 1 {
		t.Fatalf("watchdog restarts = %v, want 1", got)
	}
}

// TestKernelDropsAreExported fills a one-packet queue while its handler holds the first packet: the
// kernel drops the next openings and the counter read from the namespace says so.
func TestKernelDropsAreExported(t *testing.T) {
	ns, l := setup(t)
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	var held atomic.Bool
	serveWith(t, Options{NetNS: ns.Fd(), QueueNum: queueNum, MaxQueueLen: 1, StallTimeout: time.Minute, Registerer: reg},
		func(Packet) Reply {
			if !held.Swap(true) {
				<-release
			}
			return Reply{Action: nfqueue.NfAccept}
		})
	done := make(chan struct{})
	for range 4 {
		go func() {
			if c, err := ns.Dial("tcp", l.Addr().String(), 5*time.Second); err == nil {
				c.Close()
			}
			done <- struct{}{}
		}()
	}
	drops := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		total := 0.0
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
		return total
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if drops() == 0 {
			return errors.New("no kernel drop counted while the queue was full")
		}
		return nil
	})
	close(release)
	for range 4 {
		<-done
	}
}
