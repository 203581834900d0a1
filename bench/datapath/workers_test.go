//go:build bench

package datapath

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
)

// The flood's child role (see TestMain) and its arguments: envAddr is the server's address (no port),
// envWorkers the dialers, envFirst the first port, envConns how many connections to open, one per
// port from envFirst on, and envRate, when set, the rate at which to open them (connections a second,
// over all dialers); without it each dialer opens its next connection as soon as the last is closed.
const (
	roleFlood = "flood"
	envConns  = "PODWALL_BENCH_CONNS"
	envRate   = "PODWALL_BENCH_RATE"
)

// The flood's ports: the policy allows the server's floodFirstPort..floodLastPort, and the peer
// redirects them all to connPort, so that every connection is to a port not seen before: a new key,
// whose opening SYN the sidecar decides.
const (
	floodFirstPort = 10000
	floodLastPort  = 59999
	floodDialers   = 64
	// floodPerRound is how many connections each of a round's two runs opens at most (fewer when the
	// rounds would use up the port range).
	floodPerRound = 3000
	// floodRate is the paced run's rate, in new connections a second over the 64 dialers, unless
	// envFloodRate says otherwise: a busy pod's, a quarter of what the sidecar decides at most here.
	floodRate    = 1000
	envFloodRate = "PODWALL_BENCH_FLOOD_RATE"
)

// floodResult is what one flood run reports on stdout, as JSON.
type floodResult struct {
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	P99Micros  float64 `json:"p99_us"`
	Seconds    float64 `json:"seconds"`
	FirstError string  `json:"first_error,omitempty"`
}

// Rate is the completed connections per second.
func (r floodResult) Rate() float64 { return float64(r.Conns) / r.Seconds }

// TestVerdictFlood measures the verdict loop under a flood of new connections from 64 dialers in the
// pod, every one to a port not used before that no rule allows, under a Monitor policy, so that each
// connection's SYN is decided (audited) by the sidecar: what the policy allows, the kernel accepts
// from its allow sets without the verdict loop. Each round runs the flood twice on each side:
//
//   - paced: the dialers open connections at a fixed rate between them (floodRate, an open loop), and
//     each connection's time is counted from when it was due, so that a late start counts against the
//     firewall too. Its p99 is the verdict latency under load: the SYN's wait in the queue, its
//     verdict, and a round trip on the veth.
//   - saturating: each dialer opens its next connection as soon as the last is closed (a closed loop):
//     the most new connections a second the sidecar lets through, and the load under which its pool
//     of workers grows. (A closed loop's connect time says little of the verdict's: with 64 dialers
//     always waiting, each waits about 64 / rate, with or without a firewall.)
//
// The sidecar runs with its defaults ("scaled": a pool of verdict workers from 1 up to two per CPU)
// and, as the baseline, with the pool held at one worker (--verdict-max-workers=1), rounds interleaved
// with a third side with no firewall. It reports each side's best round and the kernel's queue drops
// over all runs of each side; it prints the scaled pool's size at each change over the whole run, and
// logs the no-firewall figures and each sidecar's own verdict latency (podwall_decision_seconds: from
// reading a packet to its verdict, a p99 bound to its histogram's power-of-two buckets) for context.
func TestVerdictFlood(t *testing.T) {
	testutil.RequireRoot(t)
	bin := sidecarBinary(t)
	rounds, _ := settings(t)
	rate := floodRate
	if s := os.Getenv(envFloodRate); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer (connections a second)", envFloodRate, s)
		}
		rate = n
	}
	perRound := min(floodPerRound, (floodLastPort-floodFirstPort+1)/rounds/2)
	dir := t.TempDir()
	flooded := func(name string, args ...string) *topology {
		top := newFloodTopology(t, name)
		p := benchPolicy(smallPolicy, top.server, connPort)
		p.Mode = policy.Monitor
		top.startSidecar(t, bin, writePolicy(t, dir, name+".json", p), args...)
		checkAudited(t, top)
		return top
	}
	fixed := flooded("fixed", "--verdict-max-workers=1")
	scaled := flooded("scaled")
	base := newFloodTopology(t, "base")
	sides := []*topology{fixed, scaled, base}
	decided := map[*topology]map[float64]float64{}
	for _, top := range sides[:2] {
		decided[top] = decisionBuckets(t, top)
	}
	t.Logf("load before the flood: %s", loadAverage(t))

	start := time.Now()
	next := map[*topology]int{fixed: floodFirstPort, scaled: floodFirstPort, base: floodFirstPort}
	drops := map[*topology]int{}
	flood := func(top *topology, rate int) floodResult {
		before := queueDrops(t, top)
		began := time.Since(start)
		r := runFlood(t, top, next[top], perRound, rate)
		next[top] += perRound
		d := queueDrops(t, top) - before
		drops[top] += d
		how := "saturating"
		if rate > 0 {
			how = fmt.Sprintf("paced at %d/s", rate)
		}
		t.Logf("%s, %s: t=%v..%v %d connections at %.0f/s, p99 %.0f µs, %d kernel queue drops", top.name, how,
			began.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), r.Conns, r.Rate(), r.P99Micros, d)
		return r
	}
	fastest := make([]float64, len(sides))
	best := interleave(rounds, sides, func(top *topology) float64 {
		paced := flood(top, rate)
		i := slices.Index(sides, top)
		fastest[i] = max(fastest[i], flood(top, 0).Rate())
		return 1 / paced.P99Micros
	})
	t.Logf("load after the flood: %s", loadAverage(t))
	t.Logf("no firewall: p99 %.0f µs paced at %d/s, %.0f connections/s saturating (best rounds)", 1/best[2], rate, fastest[2])
	for _, top := range sides[:2] {
		t.Logf("%s: the sidecar's own verdict latency (from reading the packet to its verdict) over all rounds: p99 ≤ %.0f µs",
			top.name, p99Bound(decided[top], decisionBuckets(t, top))*1e6)
	}
	// Once idle, the pool goes back to one worker; its every change since the flood began is printed.
	var changes []workersChange
	testutil.Await(t, "the scaled pool back at one worker", 30*time.Second, func() error {
		changes = workerChanges(t, scaled, start)
		if len(changes) == 0 || changes[len(changes)-1].n != 1 {
			return fmt.Errorf("pool size changes so far: %v", changes)
		}
		return nil
	})
	for _, c := range changes {
		fmt.Printf("workers t=%dms n=%d\n", c.t.Milliseconds(), c.n)
	}
	if peak := slices.MaxFunc(changes, func(a, b workersChange) int { return a.n - b.n }); peak.n < 2 {
		t.Errorf("the scaled pool never grew: %v", changes)
	}
	report(t, "verdict_p99_us_flood", 1/best[1], "us", 1/best[0], fmt.Sprintf(
		"value ≤ 2000 (p99 time to connect, new keys, 64 dialers paced at %d/s; baseline: one verdict worker)", rate))
	report(t, "connrate_flood", fastest[1], "conn/s", fastest[0],
		"none (new keys, 64 dialers, saturating; baseline: one verdict worker)")
	report(t, "queue_drops_flood", float64(drops[scaled]), "drops", float64(drops[fixed]),
		"value = 0 (kernel queue drops over all runs; baseline: one verdict worker)")
}

// newFloodTopology is a topology whose peer takes every connection to the flood's ports on connPort.
func newFloodTopology(t *testing.T, name string) *topology {
	t.Helper()
	top := newTopology(t, name, false)
	top.peer.Exec(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport",
		fmt.Sprintf("%d:%d", floodFirstPort, floodLastPort), "-j", "REDIRECT", "--to-ports", strconv.Itoa(connPort))
	return top
}

// runFlood opens n connections from the pod, to the server's ports first..first+n-1, at rate a second
// (0: as fast as they close), and returns the child's result; a connection that fails is an error of
// the test.
func runFlood(t *testing.T, top *topology, first, n, rate int) floodResult {
	t.Helper()
	var r floodResult
	runChild(t, top.pod, roleFlood, time.Minute, &r, envAddr+"="+top.server.String(), envWorkers+"="+strconv.Itoa(floodDialers),
		envFirst+"="+strconv.Itoa(first), envConns+"="+strconv.Itoa(n), envRate+"="+strconv.Itoa(rate))
	if r.Errors > 0 {
		t.Errorf("flood in %s: %d of %d connections failed, first: %s", top.name, r.Errors, r.Errors+r.Conns, r.FirstError)
	}
	return r
}

// floodChild is the flood role: it opens the connections from envWorkers dialers, each to the next
// port, closing each with an RST (no TIME_WAIT), and returns the p99 of their connect times. Paced
// (envRate above 0), the i-th connection is due i/rate seconds after the start, and its time counts
// from then.
func floodChild() floodResult {
	dialers, err1 := strconv.Atoi(os.Getenv(envWorkers))
	first, err2 := strconv.Atoi(os.Getenv(envFirst))
	n, err3 := strconv.Atoi(os.Getenv(envConns))
	addr, err4 := netip.ParseAddr(os.Getenv(envAddr))
	rate, err5 := strconv.Atoi(os.Getenv(envRate))
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil || dialers < 1 || n < 1 || rate < 0 {
		return floodResult{Errors: 1, FirstError: fmt.Sprintf("bad arguments: %d dialers, %d connections, %d a second: %v", dialers, n, rate, err)}
	}
	var (
		next atomic.Int64
		mu   sync.Mutex
		took []time.Duration
		r    floodResult
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range dialers {
		wg.Go(func() {
			var mine []time.Duration
			dialer := net.Dialer{Timeout: dialTimeout}
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				began := time.Now()
				if rate > 0 {
					began = start.Add(time.Duration(i) * time.Second / time.Duration(rate))
					time.Sleep(time.Until(began))
				}
				c, err := dialer.Dial("tcp", netip.AddrPortFrom(addr, uint16(first+int(i))).String())
				if err != nil {
					mu.Lock()
					if r.Errors++; r.FirstError == "" {
						r.FirstError = err.Error()
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(began))
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			mu.Lock()
			took = append(took, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	r.Conns = len(took)
	if len(took) > 0 {
		slices.Sort(took)
		r.P99Micros = float64(took[len(took)*99/100].Nanoseconds()) / 1e3
	}
	return r
}

// queueDrops is the kernel's count of packets it could not queue in the pod's namespace, over every
// queue: full queue and socket drops (/proc/net/netfilter/nfnetlink_queue, fields 6 and 7).
func queueDrops(t *testing.T, top *topology) int {
	t.Helper()
	total := 0
	for line := range strings.Lines(top.pod.Exec(t, "cat", "/proc/net/netfilter/nfnetlink_queue")) {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		for _, v := range f[5:7] {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("nfnetlink_queue line %q: %v", line, err)
			}
			total += n
		}
	}
	return total
}

// decisionBuckets reads the sidecar's podwall_decision_seconds histogram: each bucket's cumulative
// count by its upper bound, in seconds.
func decisionBuckets(t *testing.T, top *topology) map[float64]float64 {
	t.Helper()
	c := top.client()
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + readyAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", top.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics of %s: %v", top.name, err)
	}
	buckets := map[float64]float64{}
	for line := range strings.Lines(string(body)) {
		bucket, ok := strings.CutPrefix(line, `podwall_decision_seconds_bucket{le="`)
		if !ok {
			continue
		}
		le, count, _ := strings.Cut(bucket, `"} `)
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("metrics of %s: %q: %v", top.name, line, err)
		}
		buckets[bound] = n
	}
	if len(buckets) == 0 {
		t.Fatalf("metrics of %s: no podwall_decision_seconds buckets", top.name)
	}
	return buckets
}

// p99Bound is the upper bound of the bucket that holds the 99th percentile of the observations made
// between two readings of a histogram.
func p99Bound(before, after map[float64]float64) float64 {
	bounds := slices.Sorted(maps.Keys(after))
	total := after[math.Inf(1)] - before[math.Inf(1)]
	for _, le := range bounds {
		if after[le]-before[le] >= 0.99*total {
			return le
		}
	}
	return math.Inf(1)
}

// workersChange is one change of the verdict workers' pool, t after the flood began.
type workersChange struct {
	t time.Duration
	n int
}

// workerChanges reads the sidecar's "verdict workers" lines (stderr, JSON) since start.
func workerChanges(t *testing.T, top *topology, start time.Time) []workersChange {
	t.Helper()
	data, err := os.ReadFile(top.errFile)
	if err != nil {
		t.Fatal(err)
	}
	var changes []workersChange
	for line := range strings.Lines(string(data)) {
		var l struct {
			Time    time.Time `json:"time"`
			Msg     string    `json:"msg"`
			Workers int       `json:"workers"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "verdict workers" || l.Time.Before(start) {
			continue
		}
		changes = append(changes, workersChange{t: l.Time.Sub(start), n: l.Workers})
	}
	return changes
}

// loadAverage is the machine's load average, as /proc/loadavg has it.
func loadAverage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}
