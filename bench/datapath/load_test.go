//go:build bench

package datapath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/internal/netnstest"
)

// The connection-rate generator runs as a child process inside the pod's namespace (the pod is the
// client: egress), so that every dial is the app's own and no goroutine has to be pinned to a thread
// switched into the namespace. The child is this test binary, re-executed with these variables set.
const (
	envRole    = "PODWALL_BENCH_ROLE"
	roleLoad   = "connload"
	envAddr    = "PODWALL_BENCH_ADDR"
	envWorkers = "PODWALL_BENCH_WORKERS"
	envFor     = "PODWALL_BENCH_DURATION"
)

// maxDials bounds one load run whatever its duration: a rate far beyond what the veth can carry means
// something is wrong, and the ephemeral ports must not run out.
const maxDials = 500_000

// dialTimeout is how long one connection attempt may take. A refused connection (a deny) fails fast;
// a silently dropped SYN would hang far longer, and counts as an error after this.
const dialTimeout = 2 * time.Second

// loadResult is what one load run reports on stdout, as JSON.
type loadResult struct {
	Conns      int64   `json:"conns"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	FirstError string  `json:"first_error,omitempty"`
}

// Rate is the completed connections per second.
func (r loadResult) Rate() float64 { return float64(r.Conns) / r.Seconds }

// TestMain runs the load generator (or a DNS role of TestDNS, or TestVerdictFlood's flood) when the binary was re-executed as one,
// and the tests otherwise.
func TestMain(m *testing.M) {
	switch role := os.Getenv(envRole); role {
	case roleLoad:
	case roleDNSLoad, roleDNSLatency:
		json.NewEncoder(os.Stdout).Encode(dnsChild(role))
		os.Exit(0)
	case roleFlood:
		json.NewEncoder(os.Stdout).Encode(floodChild())
		os.Exit(0)
	default:
		os.Exit(m.Run())
	}
	workers, err1 := strconv.Atoi(os.Getenv(envWorkers))
	d, err2 := time.ParseDuration(os.Getenv(envFor))
	if err := errors.Join(err1, err2); err != nil || workers < 1 {
		fmt.Fprintf(os.Stderr, "connload: bad arguments: workers %d: %v\n", workers, err)
		os.Exit(2)
	}
	json.NewEncoder(os.Stdout).Encode(dialLoop(os.Getenv(envAddr), workers, d))
	os.Exit(0)
}

// dialLoop opens and closes TCP connections to addr from workers goroutines for d (or maxDials
// connections, whichever comes first). Each connection is closed with an RST (linger 0), so that the
// client keeps no TIME_WAIT entry and the ephemeral ports never run out.
func dialLoop(addr string, workers int, d time.Duration) loadResult {
	var conns, errs, attempts atomic.Int64
	var once sync.Once
	var first string
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			dialer := net.Dialer{Timeout: dialTimeout}
			for time.Now().Before(deadline) && attempts.Add(1) <= maxDials {
				c, err := dialer.Dial("tcp", addr)
				if err != nil {
					errs.Add(1)
					once.Do(func() { first = err.Error() })
					continue
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				conns.Add(1)
			}
		})
	}
	wg.Wait()
	return loadResult{Conns: conns.Load(), Errors: errs.Load(), Seconds: time.Since(start).Seconds(), FirstError: first}
}

// runLoad runs the generator inside ns against addr and returns its result.
func runLoad(t testing.TB, ns *netnstest.NS, addr string, workers int, d time.Duration) loadResult {
	t.Helper()
	var r loadResult
	runChild(t, ns, roleLoad, d+dialTimeout+10*time.Second, &r, envAddr+"="+addr,
		envWorkers+"="+strconv.Itoa(workers), envFor+"="+d.String())
	if r.Errors > 0 {
		t.Errorf("connload in %s to %s: %d of %d connections failed, first: %s",
			ns.Name, addr, r.Errors, r.Errors+r.Conns, r.FirstError)
	}
	return r
}

// runChild runs this test binary as role inside ns, with env added to its environment, and decodes the
// JSON it prints into out.
func runChild(t testing.TB, ns *netnstest.NS, role string, timeout time.Duration, out any, env ...string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find test binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := ns.Command(ctx, self)
	cmd.Env = append(append(os.Environ(), envRole+"="+role), env...)
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", role, ns.Name, err, stderrOf(err))
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("%s output %q: %v", role, data, err)
	}
}

// serve accepts connections on l and closes each at once, until l is closed.
func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// stderrOf returns what a failed command wrote on stderr, if the error carries it.
func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
