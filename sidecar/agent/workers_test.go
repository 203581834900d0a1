package agent

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
)

// TestVerdictWorkersScaleOutUnderAFlood floods the pod's egress with new connections from 32 dialers,
// each audited in Monitor with every line logged (no allow set holds its key, and no seen set is kept)
// so that each connection's SYN is decided in the verdict loop, until the pool of
// verdict workers has grown above its minimum and 1,000 connections or more have opened. Every
// connection opens (the peer accepts each one), and once the pod is idle the pool is back at its
// minimum.
func TestVerdictWorkersScaleOutUnderAFlood(t *testing.T) {
	const (
		port    = 9000
		dialers = 32
	)
	w := newWorld(t)
	accepted := countAccepts(t, w.peer, w.peerAddr(port).String())
	w.writePolicy(t, policy.Monitor, 1, port+1)
	w.start(t, func(o *Options) { o.MinWorkers, o.MaxWorkers = 1, 4 })
	if n := w.metric(t, "podwall_verdict_workers"); n != 1 {
		t.Fatalf("%v verdict workers before the flood, want the minimum 1", n)
	}

	var stop atomic.Bool
	var opened, failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			// Each dialer's sockets are made on its own thread in the pod's namespace.
			err := w.pod.Do(func() error {
				for !stop.Load() {
					c, err := net.DialTimeout("tcp", w.peerAddr(port).String(), 5*time.Second)
					if err != nil {
						return err
					}
					c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT: the flood never runs out of ports
					c.Close()
					opened.Add(1)
				}
				return nil
			})
			if err != nil {
				failed.Add(1)
				once.Do(func() { firstErr = err })
			}
		})
	}
	grew := 0.0
	testutil.Eventually(t, 20*time.Second, func() error {
		if grew = w.metric(t, "podwall_verdict_workers"); grew <= 1 || opened.Load() < 1000 || failed.Load() > 0 {
			return fmt.Errorf("%v verdict workers after %d connections", grew, opened.Load())
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d dialers failed during the flood, first: %v", n, firstErr)
	}
	t.Logf("%d verdict workers during a flood of %d connections", int(grew), opened.Load())
	testutil.Eventually(t, 5*time.Second, func() error {
		if a, o := accepted.Load(), opened.Load(); a != o {
			return fmt.Errorf("the peer accepted %d of %d connections opened", a, o)
		}
		return nil
	})
	if v := w.metric(t, `podwall_verdicts_total{direction="egress",verdict="audit"}`); v < float64(opened.Load()) {
		t.Errorf("%v audit verdicts for %d connections", v, opened.Load())
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := w.metric(t, "podwall_verdict_workers"); n != 1 {
			return errors.New("the pool is not back at its minimum of 1 worker once idle")
		}
		return nil
	})
}
