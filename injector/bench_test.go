//go:build bench

package injector

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podwall.io/podwall/internal/certs"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestBenchInjector creates pods through the real API server at a fixed concurrency, in a namespace
// the webhook injects and in one it does not select (the baseline: the API server calls no webhook
// there), in interleaved rounds. It prints the webhook's p99 from its own latency histogram and the
// create rates; each side's rate is its best round, as the machine is shared and other work only slows
// a round down.
func TestBenchInjector(t *testing.T) {
	pods, workers, rounds := envInt(t, "PODWALL_BENCH_PODS", 500), envInt(t, "PODWALL_BENCH_CONCURRENCY", 8), envInt(t, "PODWALL_BENCH_ROUNDS", 3)
	c := startCluster(t)
	port := freePort(t)
	c.installWebhook(t, "podwall-injector", port, nil)
	reg := prometheus.NewRegistry()
	c.runInjector(t, Options{Port: port, TLS: certs.Serving{ExtraHosts: []string{"127.0.0.1"}}, Registerer: reg})
	c.waitInjecting(t)

	fast := rest.CopyConfig(c.cfg)
	fast.QPS, fast.Burst = 1e6, 1e6 // the client's own rate limit must not be what is measured
	cs := kubernetes.NewForConfigOrDie(fast)
	createPods(t, cs, side{ns: "plain"}, 50, workers) // warm-up: connections, etcd, caches
	createPods(t, cs, side{ns: "opted"}, 50, workers)
	before := histogram(t, reg)

	// Four sides: plain pods where no webhook is called (the baseline); the same pods through the
	// webhook; pods injected beforehand where no webhook is called (the cost of storing a bigger pod);
	// opted-out pods through the webhook (the cost of a webhook call that changes nothing).
	sides := []side{{name: "plain", ns: "plain"}, {name: "webhook", ns: "opted"}, {name: "preinjected", ns: "plain", preinjected: true}, {name: "noop", ns: "opted", optOut: true}}
	best := map[string]float64{}
	for r := range rounds {
		for i := range sides {
			s := sides[(i+r)%len(sides)]
			rate := createPods(t, cs, s, pods, workers)
			t.Logf("round %d %s: %.0f pods/s", r, s.name, rate)
			best[s.name] = max(best[s.name], rate)
		}
	}
	after := histogram(t, reg)
	// The webhook and noop sides send their pods through the webhook: one call each, no re-invocation.
	if calls, want := after.GetSampleCount()-before.GetSampleCount(), uint64(2*rounds*pods); calls != want {
		t.Errorf("webhook calls: %d for %d pods through the webhook, want one each", calls, want)
	}
	p99 := quantile(before, after, 0.99) * 1000
	fmt.Printf("BENCH webhook_p99_ms value=%.2f unit=ms\n", p99)
	fmt.Printf("BENCH create_rate value=%.0f unit=pods/s baseline=%.0f ratio=%.2f\n", best["webhook"], best["plain"], best["webhook"]/best["plain"])
	fmt.Printf("BENCH create_rate_same_pod value=%.0f unit=pods/s baseline=%.0f ratio=%.2f\n", best["webhook"], best["preinjected"], best["webhook"]/best["preinjected"])
	fmt.Printf("BENCH create_rate_noop_call value=%.0f unit=pods/s baseline=%.0f ratio=%.2f\n", best["noop"], best["plain"], best["noop"]/best["plain"])
}

// side is one way of creating pods: in namespace ns, already injected or opted out.
type side struct {
	name                string
	ns                  string
	preinjected, optOut bool
}

// pre injects the preinjected side's pods as the webhook would with its defaults.
var pre = New(SidecarOptions{NativeSidecars: true, PolicyGenURL: "https://podwall-policygen.podwall-system.svc:8443"})

// createPods creates n pods as s says from workers goroutines and returns pods per second. In the
// opted namespace each pod not opted out must come back injected.
func createPods(t *testing.T, cs kubernetes.Interface, s side, n, workers int) float64 {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				pod := testPod()
				if s.optOut {
					optOut(pod)
				}
				if s.preinjected {
					if _, err := pre.Inject(pod, Namespace{Name: s.ns}); err != nil {
						errs <- err
						return
					}
				}
				p, err := cs.CoreV1().Pods(s.ns).Create(context.Background(), pod, metav1.CreateOptions{})
				if err == nil && s.ns == "opted" && !s.optOut && !injected(p) {
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
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return float64(n) / elapsed.Seconds()
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
