//go:build bench

package peers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/e2e/harness"
	"podwall.io/podwall/internal/testutil"
)

// Knobs, from the environment as in bench/datapath.
const (
	// envRounds is how many interleaved rounds each figure takes per side (default 5).
	envRounds = "PODWALL_BENCH_ROUNDS"
	// envSeconds is how long one round of load runs (default 1s).
	envSeconds = "PODWALL_BENCH_SECONDS"
)

// iperfSeconds is the least a throughput round runs, iperfOmit the seconds of its start that iperf3
// leaves out (TCP's ramp-up): a one-second round measured mostly the start and moved by a third
// between rounds of the same side.
const (
	iperfSeconds = 6
	iperfOmit    = 1
)

// firstPerRound is how many fresh-key connections, one at a time, a round of the first-connection
// latency opens on each side: enough that a round's p99 is its 11th slowest (of 200 it was the 3rd),
// which two or three connections the machine's scheduler delayed do not set.
const firstPerRound = 1000

// bench is the cluster and the sides being measured.
type bench struct {
	t      *testing.T
	c      *harness.Cluster
	knp    *knp
	client netns
	sides  []*side // none (the baseline) first
	rounds int
	round  time.Duration
	// perFresh is how many fresh ports one round of fresh-key load may use.
	perFresh int
}

// TestPeers measures podwall beside kube-network-policies (KNP) and a static nftables ruleset on the
// local e2e cluster, every side guarding the same end (the server's ingress) under the same allow
// set, and prints one BENCH line per figure and side (sides.yaml says what each side runs).
func TestPeers(t *testing.T) {
	testutil.RequireRoot(t)
	rounds, round := settings(t)
	start := time.Now()
	t.Logf("load average at start: %s", loadAverage(t))
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	ctx := context.Background()

	k := buildKNP(t, root)
	c := up(t, root)
	k.load(ctx, t, c, root)
	if err := harness.Deploy(ctx, c, root); err != nil {
		t.Fatalf("deploy podwall: %v", err)
	}
	t.Cleanup(func() { k.stop(t, c) })
	k.deploy(ctx, t, c, root)
	apply(t, c)
	// Each side's fresh ports go to setup's check (one), the first connections, and the rest in equal
	// parts to the rounds of fresh-key load with 1 and 8 dialers.
	perFresh := (lastFresh - firstFresh + 1 - 1 - rounds*firstPerRound) / (2 * rounds)
	b := &bench{t: t, c: c, knp: k, rounds: rounds, round: round, perFresh: perFresh}
	b.setup()
	t.Logf("cluster and sides ready in %s; load average %s", time.Since(start).Round(time.Second), loadAverage(t))

	b.connRates()
	b.firstConnection()
	b.throughput()
	b.checkBridge()
	t.Logf("datapath figures done at %s; load average %s", time.Since(start).Round(time.Second), loadAverage(t))
	b.memory()
	t.Logf("whole run took %s; load average at the end: %s", time.Since(start).Round(time.Second), loadAverage(t))
}

// setup finds every side's server, starts its servers, installs the static ruleset, waits until KNP
// enforces, and checks every side: the client connects, the intruder does only where nothing guards.
func (b *bench) setup() {
	t, c := b.t, b.c
	client := awaitPods(t, c, "peers-client", "app=client", 1)[0]
	clientIP := ipv4(t, client)
	b.client = containerOf(t, client, "client").netns(t)
	intruder := containerOf(t, awaitPods(t, c, "peers-client", "!app", 1)[0], "intruder").netns(t)
	for _, name := range []string{sideNone, sideKNP, sidePodwall, sideLogAll, sideStatic} {
		s := &side{name: name, namespace: "peers-" + name, nextPort: firstFresh}
		s.server = awaitPods(t, c, s.namespace, "app=server", 1)[0]
		s.addr = ipv4(t, s.server)
		s.netns = containerOf(t, s.server, "server").netns(t)
		switch name {
		case sideKNP:
			s.firewall = &b.knp.agent
		case sidePodwall, sideLogAll:
			sidecar := containerOf(t, s.server, "podwall")
			s.firewall = &sidecar
		case sideStatic:
			s.netns.run(t, staticRuleset(clientIP), "nft", "-f", "-")
		}
		startServers(t, s)
		b.sides = append(b.sides, s)
	}
	b.knp.awaitAddresses(t, []string{b.side(sideKNP).addr})
	b.checkBridge()
	for _, s := range b.sides {
		for _, port := range []int{repeatPort, s.takePorts(t, 1)} {
			if r := b.client.dial(t, dialOnce(s.addr, port)); r.Conns != 1 {
				t.Fatalf("%s: the client's connection to port %d failed: %s", s.name, port, r.FirstError)
			}
		}
		r := intruder.dial(t, dialOnce(s.addr, repeatPort))
		switch {
		case s.name == sideNone && r.Conns != 1:
			t.Fatalf("%s: the intruder's connection failed where nothing guards: %s", s.name, r.FirstError)
		case s.name != sideNone && r.Conns != 0:
			t.Fatalf("%s: the intruder connected: the side is not enforcing", s.name)
		}
	}
}

func dialOnce(addr string, port int) dialSpec {
	return dialSpec{Addr: addr, Port: port, Max: 1, Workers: 1, Duration: time.Minute, Timeout: dialTimeout}
}

func (b *bench) side(name string) *side {
	for _, s := range b.sides {
		if s.name == name {
			return s
		}
	}
	b.t.Fatalf("no side %s", name)
	return nil
}

// checkBridge makes sure bridged traffic still crosses the host's IPv4 hooks, where KNP sits: without
// it KNP would see nothing and its figures would be the bridge's.
func (b *bench) checkBridge() {
	const sysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	v, err := os.ReadFile(sysctl)
	if err != nil || strings.TrimSpace(string(v)) != "1" {
		b.t.Fatalf("%s is %q (%v), want 1: KNP would not see the pods' traffic", sysctl, v, err)
	}
}

// interleave runs measure on every side rounds times, reversing the order of the sides every other
// round, so that the machine's changing load weighs on all of them alike.
func (b *bench) interleave(measure func(s *side)) {
	for r := range b.rounds {
		for i := range b.sides {
			j := i
			if r%2 == 1 {
				j = len(b.sides) - 1 - i
			}
			measure(b.sides[j])
		}
	}
}

// figure collects one figure's rounds per side.
type figure struct {
	name   string
	unit   string
	higher bool // a higher value is better (rates); else lower (latencies)
	rounds map[string][]float64
}

func newFigure(name, unit string, higher bool) *figure {
	return &figure{name: name, unit: unit, higher: higher, rounds: map[string][]float64{}}
}

func (f *figure) add(s *side, v float64) { f.rounds[s.name] = append(f.rounds[s.name], v) }

// best is the side's best round: the machine is shared, and other work only ever makes a round worse.
func (f *figure) best(name string) float64 {
	if f.higher {
		return slices.Max(f.rounds[name])
	}
	return slices.Min(f.rounds[name])
}

// report prints the figure of every guarded side against the baseline (no policy), then podwall's
// (default logging) against KNP's and the static ruleset's as ratios: of the best rounds, and of the
// median rounds (_median), which one side's single lucky round does not move.
func (f *figure) report() {
	base := f.best(sideNone)
	for _, s := range []string{sideKNP, sidePodwall, sideLogAll, sideStatic} {
		testutil.Bench("peers_"+f.name+"_"+s, f.best(s), f.unit, base)
	}
	for _, s := range []string{sideKNP, sideStatic} {
		testutil.Bench("peers_"+f.name+"_vs_"+s, f.best(sidePodwall)/f.best(s), "ratio", 1)
		testutil.Bench("peers_"+f.name+"_vs_"+s+"_median", testutil.Median(f.rounds[sidePodwall])/testutil.Median(f.rounds[s]), "ratio", 1)
	}
}

// connRates measures the new-connection rate with 1 and 8 dialers, to the same key again and again
// and to a new key each time, and the firewall's CPU time per 10k connections over each kind's rounds.
func (b *bench) connRates() {
	t := b.t
	for _, kind := range []struct {
		name  string
		fresh bool
	}{{"repeat", false}, {"fresh", true}} {
		// The firewall's CPU time and the connections it judged, by side.
		cpu, conns := map[string]time.Duration{}, map[string]int{}
		for _, workers := range []int{1, 8} {
			f := newFigure(fmt.Sprintf("%s_c%d", kind.name, workers), "conn/s", true)
			b.interleave(func(s *side) {
				spec := dialSpec{Addr: s.addr, Port: repeatPort, Max: maxDials, Workers: workers, Duration: b.round, Timeout: dialTimeout}
				if kind.fresh {
					spec.Fresh, spec.Max, spec.Port = true, b.perFresh, s.takePorts(t, b.perFresh)
				}
				var before time.Duration
				if s.firewall != nil {
					before = s.firewall.cpu(t)
				}
				r := b.client.dial(t, spec)
				if s.firewall != nil {
					cpu[s.name] += s.firewall.cpu(t) - before
					conns[s.name] += r.Conns
				}
				if r.Errors > 0 {
					t.Errorf("%s, %s: %d of %d connections failed, first: %s", s.name, f.name, r.Errors, r.Errors+r.Conns, r.FirstError)
				}
				t.Logf("%s %s: %.0f conn/s (%d in %.2fs), connect p99 %.0f µs", f.name, s.name, r.Rate(), r.Conns, r.Seconds, r.P99Micros)
				f.add(s, r.Rate())
			})
			f.report()
		}
		// KNP's is the baseline: with no policy, and under the static ruleset, no process of a
		// firewall works, the kernel does.
		per10k := func(s string) float64 { return cpu[s].Seconds() / float64(conns[s]) * 10_000 }
		for _, s := range []string{sidePodwall, sideLogAll} {
			testutil.Bench("peers_cpu10k_"+kind.name+"_"+s, per10k(s), "cpu-s", per10k(sideKNP))
		}
	}
}

// firstConnection measures the connect time of fresh-key connections opened one at a time (each the
// first of its key, allowed), p50 and p99 of each round.
func (b *bench) firstConnection() {
	p50, p99 := newFigure("first_p50", "us", false), newFigure("first_p99", "us", false)
	b.interleave(func(s *side) {
		r := b.client.dial(b.t, dialSpec{Addr: s.addr, Port: s.takePorts(b.t, firstPerRound), Fresh: true,
			Max: firstPerRound, Workers: 1, Duration: time.Minute, Timeout: dialTimeout})
		if r.Errors > 0 {
			b.t.Errorf("%s, first connections: %d of %d failed, first: %s", s.name, r.Errors, firstPerRound, r.FirstError)
		}
		b.t.Logf("first connections %s: p50 %.0f µs, p99 %.0f µs", s.name, r.P50Micros, r.P99Micros)
		p50.add(s, r.P50Micros)
		p99.add(s, r.P99Micros)
	})
	p50.report()
	p99.report()
}

// throughput measures iperf3 with 1 and 4 streams, client to server: established flows.
func (b *bench) throughput() {
	for _, streams := range []int{1, 4} {
		f := newFigure(fmt.Sprintf("throughput_p%d", streams), "Gbit/s", true)
		b.interleave(func(s *side) {
			gbps := b.iperf(s, streams)
			b.t.Logf("%s %s: %.2f Gbit/s", f.name, s.name, gbps)
			f.add(s, gbps)
		})
		f.report()
	}
}

// memory scales the podwall side and then the KNP side to 10 and 50 guarded pods, one after the
// other (the node takes 110 pods), and compares what each firewall holds on the node: the sum of the
// sidecars' proportional memory (Pss: the binary's pages, which every sidecar of the image maps,
// count once over all of them), and KNP's agent's. One idle sidecar's resident memory is the median of
// the 50, the one that took the load aside.
func (b *bench) memory() {
	t, c := b.t, b.c
	pw, kn := b.side(sidePodwall), b.side(sideKNP)
	var sidecars, agent [2]memUse
	var idle []memUse
	for i, n := range []int{10, 50} {
		for _, p := range scale(t, c, pw.namespace, n) {
			m := containerOf(t, p, "podwall").mem(t)
			sidecars[i].add(m)
			if n == 50 && p.Name != pw.server.Name {
				idle = append(idle, m)
			}
		}
	}
	scale(t, c, pw.namespace, 1)
	for i, n := range []int{10, 50} {
		var addrs []string
		for _, p := range scale(t, c, kn.namespace, n) {
			addrs = append(addrs, ipv4(t, p))
		}
		b.knp.awaitAddresses(t, addrs)
		agent[i] = b.knp.agent.mem(t)
	}
	scale(t, c, kn.namespace, 1)
	t.Logf("podwall's cluster services beside the sidecars (not per node): %s", b.podwallServices())
	for i, n := range []int{10, 50} {
		t.Logf("%d pods: the sidecars' sum %s; KNP's agent %s", n, sidecars[i], agent[i])
	}
	slices.SortFunc(idle, func(a, b memUse) int { return cmp.Compare(a.rss, b.rss) })
	t.Logf("the median idle sidecar: %s", idle[len(idle)/2])
	testutil.Bench("peers_node_mem_10pods", sidecars[0].pss, "MiB", agent[0].pss)
	testutil.Bench("peers_node_mem_50pods", sidecars[1].pss, "MiB", agent[1].pss)
	testutil.Bench("sidecar_idle_rss_mib", idle[len(idle)/2].rss, "MiB", agent[1].rss)
}

// podwallServices lists the resident memory of policygen's and the injector's containers.
func (b *bench) podwallServices() string {
	pods, err := b.c.Client.CoreV1().Pods("podwall-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.t.Fatal(err)
	}
	var parts []string
	for i := range pods.Items {
		p := &pods.Items[i]
		for _, st := range p.Status.ContainerStatuses {
			parts = append(parts, fmt.Sprintf("%s %.1f MiB", p.Name, containerOf(b.t, p, st.Name).mem(b.t).rss))
		}
	}
	return strings.Join(parts, ", ")
}

// iperf runs iperf3 from the client to the side's server for one round (at least iperfSeconds, the
// first iperfOmit of them not counted) with streams parallel streams and returns what the server
// received, in Gbit/s.
func (b *bench) iperf(s *side, streams int) float64 {
	t := b.t
	seconds := max(int(b.round.Seconds()), iperfSeconds)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+30)*time.Second)
	defer cancel()
	out, err := b.client.command(ctx, "iperf3", "--client", s.addr, "--port", strconv.Itoa(iperfPort),
		"--parallel", strconv.Itoa(streams), "--time", strconv.Itoa(seconds), "--omit", strconv.Itoa(iperfOmit),
		"--json").Output()
	bps, jerr := iperfReceived(out)
	if err != nil || jerr != nil {
		t.Fatalf("iperf3 -P %d to %s: %v %v", streams, s.name, err, jerr)
	}
	return bps / 1e9
}

// settings reads the rounds per figure and the length of one round.
func settings(t *testing.T) (int, time.Duration) {
	t.Helper()
	rounds, round := 5, time.Second
	if s := os.Getenv(envRounds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", envRounds, s)
		}
		rounds = n
	}
	if s := os.Getenv(envSeconds); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second || d%time.Second != 0 {
			t.Fatalf("%s=%q: want whole seconds, at least 1s", envSeconds, s)
		}
		round = d
	}
	return rounds, round
}

// loadAverage is the machine's load average (1, 5, 15 minutes).
func loadAverage(t *testing.T) string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// iperfReceived is the throughput the server received, in bit/s, from iperf3's JSON report.
func iperfReceived(out []byte) (float64, error) {
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("iperf3's report %q: %w", out, err)
	}
	if res.Error != "" {
		return 0, errors.New(res.Error)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
