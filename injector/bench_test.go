//go:build bench

package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testutil"
)

// TestBenchInjector creates pods through the real API server at a fixed concurrency, the sides taking
// turns: through podwall's webhook, through the floor webhook (startFloor), which injects the same
// sidecar with no work of its own, and in a namespace no webhook selects. It prints the webhook's p99
// beside the floor's, each from its own latency histogram, and the create rates.
func TestBenchInjector(t *testing.T) {
	pods, workers, rounds := envInt(t, "PODWALL_BENCH_PODS", 500), envInt(t, "PODWALL_BENCH_CONCURRENCY", 8), envInt(t, "PODWALL_BENCH_ROUNDS", 5)
	if pods%turnPods != 0 {
		t.Fatalf("PODWALL_BENCH_PODS=%d: want a multiple of %d, the pods of one turn", pods, turnPods)
	}
	c := startCluster(t)
	port := freePort(t)
	c.installWebhook(t, "podwall-injector", port, nil)
	reg := prometheus.NewRegistry()
	c.runInjector(t, Options{Port: port, TLS: certs.Serving{ExtraHosts: []string{"127.0.0.1"}}, Registerer: reg})
	c.waitInjecting(t, "opted")
	floorReg := c.startFloor(t)

	fast := rest.CopyConfig(c.cfg)
	fast.QPS, fast.Burst = 1e6, 1e6 // the client's own rate limit must not be what is measured
	cs := kubernetes.NewForConfigOrDie(fast)
	// Four sides: plain pods where no webhook is called; the same pods through podwall's webhook and
	// through the floor's; pods injected beforehand where no webhook is called (the cost of storing a
	// bigger pod).
	sides := []side{{name: "plain", ns: "plain"}, {name: "webhook", ns: "opted", injects: true}, {name: "floor", ns: "floor", injects: true}, {name: "preinjected", ns: "plain", preinjected: true}}
	for _, s := range sides[:3] {
		createPods(t, cs, s, 50, workers) // warm-up: connections, etcd, caches
	}
	sameInjection(t, cs)
	before, floorBefore := histogram(t, reg), histogram(t, floorReg)
	// The sides take turns of turnPods pods, in an order that rotates every turn, so that what else
	// runs on the machine meanwhile weighs on all of them alike; each side's rate is its pods over
	// its time, summed over all its turns.
	took := map[string]time.Duration{}
	for r := range rounds {
		round := map[string]time.Duration{}
		for turn := range pods / turnPods {
			for i := range sides {
				s := sides[(i+r+turn)%len(sides)]
				round[s.name] += createPods(t, cs, s, turnPods, workers)
			}
		}
		for _, s := range sides {
			t.Logf("round %d %s: %.0f pods/s", r, s.name, float64(pods)/round[s.name].Seconds())
			took[s.name] += round[s.name]
		}
	}
	rate := map[string]float64{}
	for name, d := range took {
		rate[name] = float64(rounds*pods) / d.Seconds()
	}
	after, floorAfter := histogram(t, reg), histogram(t, floorReg)
	// One call per pod through a webhook: no re-invocation.
	for name, calls := range map[string]uint64{"podwall's": after.GetSampleCount() - before.GetSampleCount(), "the floor's": floorAfter.GetSampleCount() - floorBefore.GetSampleCount()} {
		if want := uint64(rounds * pods); calls != want {
			t.Errorf("%s webhook calls: %d for %d pods through it, want one each", name, calls, want)
		}
	}
	p99, floorP99 := quantile(before, after, 0.99)*1000, quantile(floorBefore, floorAfter, 0.99)*1000
	vsFloor := rate["webhook"] / rate["floor"]
	testutil.Bench("create_rate_vs_floor", vsFloor, "ratio", 1)
	testutil.Bench("webhook_p99_ms", p99, "ms", floorP99)
	testutil.Bench("create_rate", rate["webhook"], "pods/s", rate["plain"])
	testutil.Bench("create_rate_same_pod", rate["webhook"], "pods/s", rate["preinjected"])
	testutil.Bench("create_rate_floor", rate["floor"], "pods/s", rate["plain"])
}

// floorSelector is the label that selects the floor's namespace in its webhook configuration, where
// podwall's selects podwall.io/inject.
const floorSelector = "podwall.io/bench-floor"

// startFloor serves the floor webhook and returns the registry of its latency histogram. The floor is
// the least a webhook that injects podwall's sidecar must do: read the request and answer with the
// request's UID and a JSON patch. It runs as podwall's does (controller-runtime's webhook server, TLS
// with a P-256 certificate, its paths timed by the same histogram) behind podwall's webhook
// configuration (same failurePolicy, timeouts, rules and namespaceSelector but for the opt-in
// label, which is floorSelector). Its answer is podwall's, computed once by podwall's webhook for
// testPod() as the API server sends it, and served as those bytes around each request's UID.
func (c *cluster) startFloor(t *testing.T) prometheus.Gatherer {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "floor", Labels: map[string]string{floorSelector: "enabled"}}}
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	answer := floorAnswer(t, c.cs)
	ca, err := certs.NewCA("podwall-bench-floor-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Request{Hosts: []string{"127.0.0.1"}, Now: time.Now(), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLSCertificate()
	port := freePort(t)
	srv := webhook.NewServer(webhook.Options{Port: port, TLSOpts: []func(*tls.Config){func(c *tls.Config) {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	}}})
	reg := prometheus.NewRegistry()
	latency := requestDuration()
	reg.MustRegister(latency)
	for path := range routes() {
		srv.Register(path, timed(latency.WithLabelValues(path), answer))
	}
	srvCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(srvCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("floor webhook: %v", err)
		}
	})
	c.installWebhook(t, "podwall-bench-floor", port, ca.CertPEM(), func(wh *admissionregistrationv1.MutatingWebhook) {
		for i, e := range wh.NamespaceSelector.MatchExpressions {
			if e.Key == "podwall.io/inject" {
				wh.NamespaceSelector.MatchExpressions[i].Key = floorSelector
			}
		}
	})
	c.waitInjecting(t, "floor")
	return reg
}

// floorAnswer is podwall's answer for testPod() in the namespace floor, from podwall's webhook with
// the options Run gives it here. The pod is the one the API server would send: defaulted and named
// by a dry-run create where no webhook is called yet, less what the API server sets after admission
// (name, uid, creation time, generation, status).
func floorAnswer(t *testing.T, cs kubernetes.Interface) floor {
	t.Helper()
	pod, err := cs.CoreV1().Pods("floor").Create(context.Background(), testPod(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	pod.Name, pod.UID, pod.CreationTimestamp, pod.Generation, pod.Status = "", "", metav1.Time{}, 0, corev1.PodStatus{}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, PathInject, bytes.NewReader(review(t, raw)))
	req.Header.Set("Content-Type", "application/json")
	pre.Webhook(Namespace{}).ServeHTTP(rec, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		t.Fatalf("podwall's answer for the floor's pod is no patch (%v): %s", err, rec.Body.Bytes())
	}
	before, after, ok := bytes.Cut(rec.Body.Bytes(), []byte(`"fuzz"`)) // review's UID
	if !ok {
		t.Fatalf("podwall's answer for the floor's pod carries no UID: %s", rec.Body.Bytes())
	}
	return floor{before: before, after: after}
}

// floor answers every admission review with the request's UID between before and after. It reads
// the whole request, as podwall's webhook does: one left partly unread ends its HTTP/2 stream with a
// reset, which costs the API server more than the read.
type floor struct{ before, after []byte }

func (f floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review struct {
		Request struct {
			UID json.RawMessage `json:"uid"`
		} `json:"request"`
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &review)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = w.Write(slices.Concat(f.before, review.Request.UID, f.after))
}

// sameInjection checks that the floor adds what podwall's webhook adds: a pod created through each
// is stored with the same spec and annotations.
func sameInjection(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	var got [2]*corev1.Pod
	for i, ns := range []string{"opted", "floor"} {
		p, err := cs.CoreV1().Pods(ns).Create(context.Background(), testPod(), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got[i] = p
	}
	if diff := cmp.Diff(got[0].Spec, got[1].Spec); diff != "" {
		t.Fatalf("the floor's pod differs from podwall's (-podwall +floor):\n%s", diff)
	}
	if diff := cmp.Diff(got[0].Annotations, got[1].Annotations); diff != "" {
		t.Fatalf("the floor's pod's annotations differ from podwall's (-podwall +floor):\n%s", diff)
	}
}

// side is one way of creating pods: in namespace ns, already injected or coming back injected.
type side struct {
	name                 string
	ns                   string
	preinjected, injects bool
}

// pre injects the preinjected side's pods, and the floor's, as the webhook does with the options Run
// gives it in TestBenchInjector: its defaults, native sidecars (API server 1.37) and no platform
// settings.
var pre = New(SidecarOptions{NativeSidecars: true})

// turnPods is how many pods a side creates in one turn of a round.
const turnPods = 50

// createPods creates n pods as s says from workers goroutines and returns the time it took.
func createPods(t *testing.T, cs kubernetes.Interface, s side, n, workers int) time.Duration {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				pod := testPod()
				if s.preinjected {
					if _, err := pre.Inject(pod, Namespace{Name: s.ns}); err != nil {
						errs <- err
						return
					}
				}
				p, err := cs.CoreV1().Pods(s.ns).Create(context.Background(), pod, metav1.CreateOptions{})
				if err == nil && s.injects && !injected(p) {
					err = fmt.Errorf("pod %s not injected", p.Name)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return took
}

// histogram reads the /inject latency histogram from the injector's registry.
func histogram(t *testing.T, reg prometheus.Gatherer) *dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "podwall_injector_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "path" && l.GetValue() == PathInject {
					return m.GetHistogram()
				}
			}
		}
	}
	t.Fatal("no latency histogram for " + PathInject)
	return nil
}

// quantile estimates q over the requests observed between two readings of the histogram, as
// Prometheus' histogram_quantile does: linear within the bucket that holds it.
func quantile(before, after *dto.Histogram, q float64) float64 {
	rank := q * float64(after.GetSampleCount()-before.GetSampleCount())
	lower, below := 0.0, 0.0
	for i, b := range after.GetBucket() {
		upper := b.GetUpperBound()
		count := float64(b.GetCumulativeCount() - before.GetBucket()[i].GetCumulativeCount())
		if count >= rank {
			return lower + (upper-lower)*(rank-below)/math.Max(count-below, 1)
		}
		lower, below = upper, count
	}
	return math.Inf(1)
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}
