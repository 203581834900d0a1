//go:build bench

package datapath

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/agent"
	"podwall.io/podwall/sidecar/verdictlog"
)

// floodProbePort is the first of the ports, one a round, that the pod connects to during the flood:
// no rule allows them and none was tried before, so each is a new key the verdict loop must decide.
const floodProbePort = 20000

// measureDenyFlood times, in milliseconds from the connection attempt to the verdict line's time, the
// deny of a new key while the peer floods the pod with SYNs to a denied port (hping3, about 10k a
// second, from one source), and as its baseline the same with no flood. The agent runs in this process
// in Protect with the production log budget (100 lines a second, 200 at once, per verdict). Each
// figure is its median round.
func measureDenyFlood(t *testing.T, rounds int) (flooded, calm float64) {
	t.Helper()
	hping, err := exec.LookPath("hping3")
	if err != nil {
		t.Fatalf("hping3: %v (Debian: apt-get install hping3)", err)
	}
	pod, peer := netnstest.New(t), netnstest.New(t)
	podEnd, peerEnd := netnstest.Pair(t, pod, peer)
	server := peerEnd.Addr.Addr()
	out := &testutil.Buffer{}
	file := writePolicy(t, t.TempDir(), "flood.json", benchPolicy(smallPolicy, server, connPort))
	httpAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan error, 1)
	go func() {
		exited <- agent.Run(ctx, agent.Options{NetNS: pod.Path(), Pod: "flood", Namespace: "bench",
			Workload: "Deployment/bench", PolicyFile: file, HTTPAddr: httpAddr, Stdout: out,
			Tunables: agent.Tunables{Log: verdictlog.Options{Allows: verdictlog.AllowsFirst, Rate: 100, Burst: 200}}},
			logr.Discard())
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-exited; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	testutil.Await(t, "agent ready", 10*time.Second, func() error {
		return testutil.HTTPOK(nil, "http://"+httpAddr+"/readyz")
	})

	port := uint16(floodProbePort)
	firstDeny := func() float64 {
		port++
		dst := netip.AddrPortFrom(server, port)
		start := time.Now()
		if c, err := pod.Dial("tcp", dst.String(), dialTimeout); err == nil {
			c.Close()
			t.Fatalf("connection to %s, which no rule allows, got through", dst)
		}
		var at time.Time
		testutil.Await(t, "deny line for "+dst.String(), 5*time.Second, func() error {
			var ok bool
			at, ok = denyLineTime(t, out, dst)
			if !ok {
				return fmt.Errorf("no deny line for %s yet", dst)
			}
			return nil
		})
		return ms(at.Sub(start))
	}

	var calms []float64
	for range rounds {
		calms = append(calms, firstDeny())
	}
	floodCtx, stopFlood := context.WithCancel(context.Background())
	flood := peer.Command(floodCtx, hping, "-q", "-S", "-p", fmt.Sprint(deniedPort), "-i", "u100",
		podEnd.Addr.Addr().String())
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopFlood(); _ = flood.Wait() }()
	floodDst := netip.AddrPortFrom(podEnd.Addr.Addr(), deniedPort)
	testutil.Await(t, "flood under way", 10*time.Second, func() error {
		if _, ok := denyLineTime(t, out, floodDst); !ok {
			return fmt.Errorf("no deny line for the flood's %s yet", floodDst)
		}
		return nil
	})
	var floods []float64
	for range rounds {
		floods = append(floods, firstDeny())
	}
	return testutil.Median(floods), testutil.Median(calms)
}

// denyLineTime is the time of the deny line of a connection to dst, if out has one.
func denyLineTime(t *testing.T, out *testutil.Buffer, dst netip.AddrPort) (time.Time, bool) {
	t.Helper()
	for line := range strings.Lines(out.String()) {
		var l verdict.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("verdict line %q: %v", line, err)
		}
		if l.Verdict == policy.Deny && l.Dst == dst {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

// freeAddr is a free loopback address for the agent's /readyz, in this process's namespace.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
