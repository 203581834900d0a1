package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// waitFor polls the verdict lines on out until one has every field that want sets (a zero field of want
// matches anything).
func waitFor(t *testing.T, out *testutil.Buffer, want verdict.Line) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		for line := range strings.Lines(out.String()) {
			var got verdict.Line
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("verdict line %q: %v", line, err)
			}
			if matches(got, want) {
				return nil
			}
		}
		return fmt.Errorf("no verdict line with %+v; got:\n%s", want, out)
	})
}

// matches says whether got has every field that want sets.
func matches(got, want verdict.Line) bool {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range w.NumField() {
		if !w.Field(i).IsZero() && g.Field(i).Interface() != w.Field(i).Interface() {
			return false
		}
	}
	return true
}

// world is a pod namespace guarded by a sidecar and a peer namespace across a veth pair. The peer
// serves TCP on ports 80, 81 and 8080 (each accepts and closes at once).
type world struct {
	pod, peer     *netnstest.NS
	podIP, peerIP netip.Addr
	// peerLink is the peer's end of the veth pair.
	peerLink   netnstest.Link
	out        *testutil.Buffer
	policyFile string
	cacheDir   string
	httpAddr   string
	// log, if set, is the agent's logger instead of the test's.
	log logr.Logger
}

func newWorld(t *testing.T) *world {
	w := &world{pod: netnstest.New(t), peer: netnstest.New(t), out: &testutil.Buffer{}}
	a, b := netnstest.Pair(t, w.pod, w.peer)
	w.podIP, w.peerIP, w.peerLink = a.Addr.Addr(), b.Addr.Addr(), b
	for _, port := range []uint16{80, 81, 8080} {
		w.peer.Serve(t, w.peerAddr(port).String())
	}
	dir := t.TempDir()
	w.policyFile, w.cacheDir = filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "cache")
	if err := os.Mkdir(w.cacheDir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.httpAddr = freePort(t)
	return w
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// policy allows egress to the peer on the given TCP ports and forbids the app the proxy admin port.
func (w *world) policy(mode policy.Mode, rev int64, ports ...uint16) *policy.Policy {
	p := &policy.Policy{Namespace: "shop", Workload: "Deployment/web", Revision: rev, Mode: mode,
		Names: map[netip.Addr]string{w.peerIP: "workload:shop/Deployment/api"},
		Loopback: []policy.LoopbackRule{{ID: "envoy-admin", Origin: policy.OriginManifest, Action: policy.ActionDeny,
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 15000}}}}}
	if len(ports) > 0 {
		r := policy.Rule{ID: "api", Origin: policy.OriginUser, Peer: "workload:shop/Deployment/api",
			CIDRs: []netip.Prefix{netip.PrefixFrom(w.peerIP, 32)}}
		for _, port := range ports {
			r.Ports = append(r.Ports, policy.PortRange{Protocol: policy.TCP, Port: port})
		}
		p.Egress = []policy.Rule{r}
	}
	return p
}

// writePolicy replaces the policy file atomically, as a ConfigMap update or an editor would.
func (w *world) writePolicy(t *testing.T, mode policy.Mode, rev int64, ports ...uint16) {
	t.Helper()
	w.write(t, w.policy(mode, rev, ports...))
}

// write replaces the policy file with p, atomically.
func (w *world) write(t *testing.T, p *policy.Policy) {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	tmp := w.policyFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, w.policyFile); err != nil {
		t.Fatal(err)
	}
}

// start runs an agent for the pod namespace and waits until /readyz says ready. The agent stops
// when the test ends (or when the returned stop is called).
func (w *world) start(t *testing.T, tune func(*Options)) (a *Agent, stop func()) {
	t.Helper()
	o := Options{NetNS: w.pod.Path(), Pod: "web-1", Namespace: "shop", Workload: "Deployment/web",
		PolicyFile: w.policyFile, CacheDir: w.cacheDir, HTTPAddr: w.httpAddr, Stdout: w.out,
		Tunables: Tunables{Log: verdictlog.Options{Allows: verdictlog.AllowsAll}}}
	if tune != nil {
		tune(&o)
	}
	log := w.log
	if log.GetSink() == nil {
		log = testr.New(t)
	}
	a, err := New(o, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	exited := make(chan struct{})
	go func() {
		runErr = a.Run(ctx)
		close(exited)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-exited
			if runErr != nil {
				t.Errorf("agent: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	testutil.Eventually(t, 10*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("agent stopped before ready: %v", runErr)
		default:
		}
		return testutil.HTTPOK(nil, "http://"+w.httpAddr+"/readyz")
	})
	return a, stop
}

// dial connects from the pod to addr and reports how long the attempt took.
func (w *world) dial(addr netip.AddrPort) (time.Duration, error) {
	start := time.Now()
	c, err := w.pod.Dial("tcp", addr.String(), 3*time.Second)
	if err == nil {
		c.Close()
	}
	return time.Since(start), err
}

func (w *world) peerAddr(port uint16) netip.AddrPort { return netip.AddrPortFrom(w.peerIP, port) }

// mustRefuseFast asserts that a connection to addr is refused (not hung) within 100 ms.
func (w *world) mustRefuseFast(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	took, err := w.dial(addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if took > 100*time.Millisecond {
		t.Fatalf("dial %s refused after %v, want < 100ms", addr, took)
	}
}

func TestProtectAllowsPolicyAndRefusesTheRestFast(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 3, 80)
	a, _ := w.start(t, nil)
	if a.queue != ruleset.QueueCompat {
		t.Fatalf("queue kind %v; this kernel has no nft_queue, so the compat path must be taken", a.queue)
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Direction: policy.Egress, Dst: w.peerAddr(80),
		Rule: "api", Peer: "workload:shop/Deployment/api", Mode: policy.Protect, PolicyRevision: 3,
		Pod: "web-1", Namespace: "shop", Workload: "Deployment/web"})
	w.mustRefuseFast(t, w.peerAddr(81))
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Dst: w.peerAddr(81), Rule: "default"})
	// Repeats of an allowed connection keep working (decided in the kernel once seen).
	for range 20 {
		if _, err := w.dial(w.peerAddr(80)); err != nil {
			t.Fatalf("repeat allowed connection: %v", err)
		}
	}
	resp, err := http.Get("http://" + w.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{`podwall_verdicts_total{direction="egress",verdict="deny"} 1`,
		`podwall_queue_kernel_drops_total{queue="100",reason="queue_full"} 0`, `podwall_policy_revision 3`} {
		if !strings.Contains(string(body), series) {
			t.Errorf("metrics lack %s:\n%s", series, body)
		}
	}
}

// TestAllowSetsAcceptInTheKernelAndLog: what the allow sets allow is accepted in the kernel, never
// queued, and still logged line by line with the rule that allows it, counted, and in Learn recorded
// for policygen; the rest is queued and judged as ever.
func TestAllowSetsAcceptInTheKernelAndLog(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	a, _ := w.start(t, nil)
	const conns = 20
	for range conns {
		if _, err := w.dial(w.peerAddr(80)); err != nil {
			t.Fatalf("allowed connection: %v", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		n := 0
		for line := range strings.Lines(w.out.String()) {
			if strings.Contains(line, `"verdict":"allow"`) && strings.Contains(line, `"rule":"api"`) &&
				strings.Contains(line, `"evaluator":"egress"`) {
				n++
			}
		}
		if n != conns {
			return fmt.Errorf("%d allow lines naming rule api, want one per connection (%d)", n, conns)
		}
		return nil
	})
	for series, want := range map[string]float64{`podwall_verdicts_total{direction="egress",verdict="allow"}`: conns,
		"podwall_decision_seconds_count": 0} {
		if got := w.metric(t, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	w.mustRefuseFast(t, w.peerAddr(81))
	waitFor(t, w.out, verdict.Line{Verdict: policy.Deny, Dst: w.peerAddr(81), Rule: "default"})
	if got := w.metric(t, "podwall_decision_seconds_count"); got != 1 {
		t.Errorf("%v decisions in the verdict loop, want 1: the denied connection's", got)
	}

	w.writePolicy(t, policy.Learn, 2, 80)
	waitRevision(t, a, 2)
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		for _, e := range a.dp.reports.Drain() {
			if e.Direction == policy.Egress && e.Peer == w.peerIP && e.Port == 80 {
				return nil
			}
		}
		return errors.New("Learn did not record the connection the kernel accepted")
	})
}

// TestNoticeAppNetRaw checks that a sidecar told that app containers hold CAP_NET_RAW says so in the
// verdict log's first line, naming them.
func TestNoticeAppNetRaw(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	w.start(t, func(o *Options) { o.AppNetRaw = []string{"web", "debug"} })
	testutil.Eventually(t, 5*time.Second, func() error {
		first, _, ok := strings.Cut(w.out.String(), "\n")
		if !ok {
			return errors.New("no line yet")
		}
		var got verdict.Line
		if err := json.Unmarshal([]byte(first), &got); err != nil {
			t.Fatalf("line %q: %v", first, err)
		}
		if !got.IsNotice() || got.Notice != verdict.NoticeAppNetRaw || got.Pod != "web-1" ||
			!slices.Equal(got.Containers, []string{"web", "debug"}) || !strings.Contains(got.Message, "SO_MARK") {
			t.Fatalf("first line %s, want the app-net-raw notice for web and debug", first)
		}
		return nil
	})
}

func TestMonitorAuditsAndLearnRecords(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Monitor, 1, 80)
	a, _ := w.start(t, nil)
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("Monitor must allow what Protect would deny: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Audit, Dst: w.peerAddr(81), Mode: policy.Monitor})

	w.writePolicy(t, policy.Learn, 2, 80)
	waitRevision(t, a, 2)
	if _, err := w.dial(w.peerAddr(8080)); err != nil {
		t.Fatalf("Learn must allow: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Dst: w.peerAddr(8080), Mode: policy.Learn})
	found := false
	for _, e := range a.dp.reports.Drain() {
		if e.Direction == policy.Egress && e.Peer == w.peerIP && e.Port == 8080 && e.Protocol == policy.TCP {
			found = true
		}
	}
	if !found {
		t.Fatal("Learn did not record the connection for reporting")
	}
}

func waitRevision(t *testing.T, a *Agent, rev int64) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := a.Revision(); got != rev {
			return fmt.Errorf("revision %d in force, want %d", got, rev)
		}
		return nil
	})
}

func TestBadPolicyKeepsTheLastGood(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	a, _ := w.start(t, nil)
	if err := os.WriteFile(w.policyFile, []byte("mode: Protect\negress: [{id: x, origin: user, cidrs: [not-an-ip]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if promtest.ToFloat64(a.applyErr) == 0 {
			return errors.New("the bad policy is not refused")
		}
		return nil
	})
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection after a bad policy: %v", err)
	}
	w.mustRefuseFast(t, w.peerAddr(81))
	// The watch goes on: the next good file is applied, YAML too (read again whole once its stream
	// is found not to be JSON), and cached as it was written.
	doc, err := yaml.Marshal(w.policy(policy.Protect, 2, 80, 81))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.policyFile, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, a, 2)
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("connection the YAML policy allows: %v", err)
	}
	if cached, err := os.ReadFile(filepath.Join(w.cacheDir, cacheFile)); err != nil || !bytes.Equal(cached, doc) {
		t.Errorf("the cache (%v) is not the YAML file:\n%s", err, cached)
	}
}

// A pod whose claimed owner policygen refuses is served a policy of its own (Pod/<name>), while the
// injector, reading ownerReferences as the pod's creator wrote them, named the claimed workload: the
// verdict lines and the reports name the workload of the policy served, not the injector's.
func TestLinesNameTheServedWorkload(t *testing.T) {
	w := newWorld(t)
	p := w.policy(policy.Protect, 3, 80)
	p.Workload = "Pod/web-1"
	w.write(t, p)
	a, _ := w.start(t, nil) // Options.Workload is Deployment/web, as the injector wrote it
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	waitFor(t, w.out, verdict.Line{Verdict: policy.Allow, Dst: w.peerAddr(80), Pod: "web-1", Namespace: "shop", Workload: "Pod/web-1"})
	for line := range strings.Lines(w.out.String()) {
		if strings.Contains(line, "Deployment/web") {
			t.Errorf("a line names the injector's workload: %s", line)
		}
	}
	h := a.reportHeader()
	if h.Workload != "Pod/web-1" || h.Namespace != "shop" || h.Pod != "web-1" {
		t.Errorf("reports as %s/%s (pod %s), want shop/Pod/web-1", h.Namespace, h.Workload, h.Pod)
	}
}
