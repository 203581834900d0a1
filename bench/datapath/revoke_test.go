//go:build bench

package datapath

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/agent"
	"podwall.io/podwall/sidecar/verdictlog"
)

// revokeFlows is how many open connections the policy change cuts, on revokePort: a port the peer
// serves by holding every connection open (the load's connPort closes them at once).
const (
	revokeFlows = 1_000
	revokePort  = 7002
)

// measureRevoke times agent.Apply of a Protect policy that no longer allows revokePort, with
// revokeFlows connections to it open (Apply returns once the last of them is cut) and, as its
// baseline, with none open: the apply alone. The agent runs in this process, with allows decided in
// the kernel (log-allows none), so that the connections open without a verdict loop and Apply is timed
// exactly, without polling. Each figure is its median round in milliseconds.
func measureRevoke(t *testing.T, rounds int) (cut, alone float64) {
	t.Helper()
	pod, peer := netnstest.New(t), netnstest.New(t)
	_, peerEnd := netnstest.Pair(t, pod, peer)
	server := peerEnd.Addr.Addr()
	addr := net.JoinHostPort(server.String(), strconv.Itoa(revokePort))
	held := holdAll(t, peer.Listen(t, "tcp", addr))
	a, err := agent.New(agent.Options{NetNS: pod.Path(), Pod: "revoke", Namespace: "bench", Workload: "Deployment/bench",
		Stdout: io.Discard, Tunables: agent.Tunables{Log: verdictlog.Options{Allows: verdictlog.AllowsNone}}}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	rev := int64(0)
	apply := func(ports ...uint16) time.Duration {
		rev++
		p := benchPolicy(smallPolicy, server, ports...)
		p.Revision = rev
		start := time.Now()
		if err := a.Apply(p); err != nil {
			t.Fatalf("apply revision %d: %v", rev, err)
		}
		return time.Since(start)
	}
	var cuts, alones []float64
	for range rounds {
		apply(connPort, revokePort)
		alones = append(alones, ms(apply(connPort)))
		apply(connPort, revokePort)
		conns := openFlows(t, pod, addr)
		cuts = append(cuts, ms(apply(connPort)))
		checkCut(t, conns[0], conns[len(conns)-1])
		for _, c := range conns {
			c.Close()
		}
		held.closeAll()
	}
	return testutil.Median(cuts), testutil.Median(alones)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// openFlows opens revokeFlows connections from the pod to addr.
func openFlows(t *testing.T, pod *netnstest.NS, addr string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, revokeFlows)
	err := pod.Do(func() error {
		for range revokeFlows {
			c, err := net.DialTimeout("tcp", addr, dialTimeout)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("open %d flows (%d open): %v", revokeFlows, len(conns), err)
	}
	return conns
}

// checkCut makes sure the measured apply really cut the flows: a write on the first and the last one
// draws a reset, which the next read returns.
func checkCut(t *testing.T, conns ...net.Conn) {
	t.Helper()
	for _, c := range conns {
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(dialTimeout))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("flow %s → %s still open after the revoking apply (%v)", c.LocalAddr(), c.RemoteAddr(), err)
		}
	}
}

// holder keeps every connection a listener accepts open until closeAll.
type holder struct {
	mu    sync.Mutex
	conns []net.Conn
}

func holdAll(t *testing.T, l net.Listener) *holder {
	h := &holder{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.closeAll)
	return h
}

func (h *holder) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}
