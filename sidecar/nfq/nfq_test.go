package nfq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

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
	loop, err := Bind(o, h, testr.New(t))
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

// dialAll opens n connections to addr from ns at once and returns a channel that receives each
// attempt's error.
func dialAll(ns *netnstest.NS, addr string, n int) <-chan error {
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := ns.Dial("tcp", addr, 10*time.Second)
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	return errs
}

// TestPoolGrowsWhilePacketsWaitAndShrinksWhenIdle holds every packet in its handler until 16
// connections are queued: the pool doubles up to its maximum while they wait (a reader, held too,
// hands the queue on to a new one and joins the pool), never holding more than the pool and the reader
// can, answers them all once released, and falls back to its minimum when idle. The gauge says so
// throughout.
func TestPoolGrowsWhilePacketsWaitAndShrinksWhenIdle(t *testing.T) {
	ns, l := setup(t)
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	var held atomic.Int64
	serveWith(t, Options{NetNS: ns.Fd(), QueueNum: queueNum, StallTimeout: time.Minute, MinWorkers: 1, MaxWorkers: 4,
		Registerer: reg}, func(Packet) Reply {
		held.Add(1)
		<-release
		return Reply{Action: nfqueue.NfAccept}
	})
	workers := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "podwall_verdict_workers" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no podwall_verdict_workers")
		return 0
	}
	if n := workers(); n != 1 {
		t.Fatalf("%v workers before any packet, want the minimum 1", n)
	}
	const conns = 16
	errs := dialAll(ns, l.Addr().String(), conns)
	testutil.Eventually(t, 5*time.Second, func() error {
		if n, h := workers(), held.Load(); n != 4 || h < 4 {
			return fmt.Errorf("%v workers holding %d packets, want the maximum 4 holding one each", n, h)
		}
		return nil
	})
	if h := held.Load(); h > 5 {
		t.Fatalf("%d packets held at once, want at most the pool's 4 and the reader's one", h)
	}
	close(release)
	for range conns {
		if err := <-errs; err != nil {
			t.Errorf("connection answered by the pool: %v", err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := workers(); n != 1 {
			return fmt.Errorf("%v workers after the load, want the minimum 1 once idle", n)
		}
		return nil
	})
}

// TestStopAnswersEveryPacketRead stops the loop while the reader (and maybe its one worker) holds a
// packet and the rest wait in the queue or for the worker: stop waits for them, every packet queued is
// answered (each connection opens), and none is answered twice.
func TestStopAnswersEveryPacketRead(t *testing.T) {
	ns, l := setup(t)
	m := NewMetrics(nil)
	release := make(chan struct{})
	var decided atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loop, err := Bind(Options{NetNS: ns.Fd(), QueueNum: queueNum, StallTimeout: time.Minute, Metrics: m},
		func(Packet) Reply {
			<-release
			decided.Add(1)
			return Reply{Action: nfqueue.NfAccept}
		}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { loop.Run(ctx); close(stopped) }()
	const conns = 8
	errs := dialAll(ns, l.Addr().String(), conns)
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := queued(t, ns); n != conns {
			return fmt.Errorf("the kernel holds %d packets for a verdict, want %d", n, conns)
		}
		return nil
	})
	cancel()
	select {
	case <-stopped:
		t.Fatal("the loop stopped while its worker held a packet")
	default:
	}
	close(release)
	<-stopped
	for range conns {
		if err := <-errs; err != nil {
			t.Errorf("connection queued when the loop stopped: %v", err)
		}
	}
	var sent dto.Metric
	if err := m.Latency.Write(&sent); err != nil {
		t.Fatal(err)
	}
	if n, v := decided.Load(), sent.GetHistogram().GetSampleCount(); n != conns || v != conns {
		t.Fatalf("%d packets decided and %d verdicts sent, want %d of each", n, v, conns)
	}
}

// queued is the number of packets the kernel holds for a verdict in the test's queue.
func queued(t *testing.T, ns *netnstest.NS) int {
	table, err := readInNetNS(ns.Fd(), procQueues)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(table), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == fmt.Sprint(queueNum) {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("queue_total in %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}
