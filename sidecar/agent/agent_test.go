package agent

import (
	"bufio"
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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// lines is a concurrency-safe stdout that the test reads verdict lines from.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// verdicts decodes every verdict line written so far.
func (l *lines) verdicts() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["verdict"] != nil {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls the verdict lines until one has every field of want.
func (l *lines) waitFor(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range l.verdicts() {
			if matches(v, want) {
				return v
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no verdict line with %v; got:\n%s", want, l.buf.String())
	return nil
}

func matches(v, want map[string]any) bool {
	for k, w := range want {
		if fmt.Sprint(v[k]) != fmt.Sprint(w) {
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
	out           *lines
	policyFile    string
	cacheDir      string
	httpAddr      string
}

func newWorld(t *testing.T) *world {
	testutil.RequireRoot(t)
	w := &world{pod: netnstest.New(t), peer: netnstest.New(t), out: &lines{}}
	a, b := netnstest.Pair(t, w.pod, w.peer)
	w.podIP, w.peerIP = a.Addr.Addr(), b.Addr.Addr()
	for _, port := range []int{80, 81, 8080} {
		w.peer.Serve(t, fmt.Sprintf("%s:%d", w.peerIP, port))
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
	data, err := json.Marshal(w.policy(mode, rev, ports...))
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

// start runs a sidecar for the pod namespace and waits until /readyz says ready. The sidecar stops
// when the test ends (or when the returned stop is called).
func (w *world) start(t *testing.T, tune func(*Options)) (s *Sidecar, stop func()) {
	t.Helper()
	o := Options{NetNS: w.pod.Path(), Pod: "web-1", Namespace: "shop", Workload: "Deployment/web",
		PolicyFile: w.policyFile, CacheDir: w.cacheDir, HTTPAddr: w.httpAddr, Stdout: w.out,
		Tunables: Tunables{Log: verdictlog.Options{Allows: verdictlog.AllowsAll}}}
	if tune != nil {
		tune(&o)
	}
	s, err := New(o, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sidecar: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("sidecar stopped before ready: %v", err)
		default:
		}
		if resp, err := http.Get("http://" + w.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("sidecar not ready in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dial connects from the pod to addr and reports how long the attempt took.
func (w *world) dial(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := w.pod.Dial("tcp", addr, 3*time.Second)
	if err == nil {
		c.Close()
	}
	return time.Since(start), err
}

func (w *world) peerAddr(port int) string { return fmt.Sprintf("%s:%d", w.peerIP, port) }

// mustRefuseFast asserts that a connection to addr is refused (not hung) within 100 ms.
func (w *world) mustRefuseFast(t *testing.T, addr string) {
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
	s, _ := w.start(t, nil)
	if s.queue != ruleset.QueueCompat {
		t.Fatalf("queue kind %v; this kernel has no nft_queue, so the compat path must be taken", s.queue)
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	w.out.waitFor(t, map[string]any{"verdict": "allow", "direction": "egress", "dst": w.peerAddr(80),
		"rule": "api", "peer": "workload:shop/Deployment/api", "mode": "Protect", "policy_revision": 3,
		"pod": "web-1", "namespace": "shop", "workload": "Deployment/web"})
	w.mustRefuseFast(t, w.peerAddr(81))
	w.out.waitFor(t, map[string]any{"verdict": "deny", "dst": w.peerAddr(81), "rule": "default"})
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

func TestMonitorAuditsAndLearnRecords(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Monitor, 1, 80)
	s, _ := w.start(t, nil)
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("Monitor must allow what Protect would deny: %v", err)
	}
	w.out.waitFor(t, map[string]any{"verdict": "audit", "dst": w.peerAddr(81), "mode": "Monitor"})

	w.writePolicy(t, policy.Learn, 2, 80)
	waitRevision(t, s, 2)
	if _, err := w.dial(w.peerAddr(8080)); err != nil {
		t.Fatalf("Learn must allow: %v", err)
	}
	w.out.waitFor(t, map[string]any{"verdict": "allow", "dst": w.peerAddr(8080), "mode": "Learn"})
	found := false
	for _, e := range s.dp.learned.Drain() {
		if e.Direction == policy.Egress && e.Peer == w.peerIP && e.Port == 8080 && e.Protocol == policy.TCP {
			found = true
		}
	}
	if !found {
		t.Fatal("Learn did not record the connection for reporting")
	}
}

func waitRevision(t *testing.T, s *Sidecar, rev int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("revision %d applied", rev), func() bool { return s.Revision() == rev })
}

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not in 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBadPolicyKeepsTheLastGood(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	s, _ := w.start(t, nil)
	if err := os.WriteFile(w.policyFile, []byte("mode: Protect\negress: [{id: x, origin: user, cidrs: [not-an-ip]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad policy is refused", func() bool { return testutil.ToFloat64(s.applyErr) > 0 })
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection after a bad policy: %v", err)
	}
	w.mustRefuseFast(t, w.peerAddr(81))
}
