//go:build bench

package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/scheme"
)

// The scale and targets.
const (
	workloads     = 200
	podsPerWL     = 10
	subscribers   = 500
	peersPerWL    = 3 // each workload's policy allows egress to the next three workloads
	namespaces    = 10
	changes       = 100
	targetP99MS   = 2000.0
	targetRSSMiB  = 300.0
	createWorkers = 16
)

func nsOf(w int) string   { return fmt.Sprintf("bench-%d", w%namespaces) }
func nameOf(w int) string { return fmt.Sprintf("w%d", w) }
func ipOf(w, p, gen int) string {
	return netip.AddrFrom4([4]byte{10, byte(gen), byte(w), byte(p + 1)}).String()
}

// TestBenchPolicygen measures how long a peer pod's IP change takes to reach every affected
// subscriber (all of them holding the new address), and policygen's peak RSS.
func TestBenchPolicygen(t *testing.T) {
	cfg, _ := pgtest.Start(t)
	fast := rest.CopyConfig(cfg)
	fast.QPS, fast.Burst = 2000, 4000
	c, err := client.New(fast, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	k := pgtest.Cluster{T: t, C: c, Cfg: fast}
	bin := pgtest.BuildPolicygen(t)
	kubeconfig := pgtest.Kubeconfig(t, cfg, "")
	pgtest.Namespace(t, c, "podwall-system", nil)
	for i := range namespaces {
		pgtest.Namespace(t, c, nsOf(i), map[string]string{"podwall.io/inject": "enabled"})
	}
	start := time.Now()
	pods := createWorkloads(t, c)
	t.Logf("created %d workloads, %d pods and their policies in %v", workloads, workloads*podsPerWL, time.Since(start))

	certDir, _, httpClient := pgtest.CertDir(t)
	addr := pgtest.FreeAddr(t)
	proc := pgtest.StartProcess(t, bin, []string{"KUBECONFIG=" + kubeconfig},
		"--api-addr="+addr, "--cert-mode=external", "--cert-dir="+certDir, "--metrics-addr=0", "--health-addr=0",
		"--namespace=podwall-system", "--replica-name=bench", "--learn-quiet-period=0")

	// Subscriber j is a sidecar of workload j%200's pod j/200.
	start = time.Now()
	tokens := make([]string, subscribers)
	parallel(t, subscribers, func(j int) (err error) {
		tokens[j], err = k.RequestToken(pods[j%workloads][j/workloads], "podwall")
		return err
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	arrivals := make([]*arrivalLog, subscribers)
	for j := range subscribers {
		// All subscribers share one transport and its connection pool; each reads its token from a file
		// as a sidecar does.
		cl, err := pgclient.New(pgclient.Options{URL: "https://" + addr, TokenFile: pgtest.TokenFile(t, tokens[j]),
			Transport: httpClient.Transport, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}, logr.Discard())
		if err != nil {
			t.Fatal(err)
		}
		arrivals[j] = &arrivalLog{}
		wg.Go(func() { cl.Subscribe(ctx, nil, arrivals[j].apply) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	testutil.Eventually(t, 3*time.Minute, func() error {
		for j, a := range arrivals {
			if !a.held() {
				return fmt.Errorf("subscriber %d has no policy yet", j)
			}
		}
		return nil
	})
	t.Logf("%d subscribers hold their policy %v after policygen started", subscribers, time.Since(start))

	// Change one pod IP at a time; a change is done when every subscriber whose policy names that
	// workload holds the new address.
	var lat []float64
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range changes {
		w := rng.IntN(workloads)
		pod := pods[w][0]
		newIP := ipOf(w, 0, 1+n%250)
		affected := subscribersOf(w)
		t0 := time.Now()
		k.SetIP(pod, newIP)
		var worst time.Duration
		testutil.Eventually(t, 30*time.Second, func() error {
			worst = 0
			for _, j := range affected {
				at, ok := arrivals[j].firstWith(newIP, t0)
				if !ok {
					return fmt.Errorf("change %d: subscriber %d lacks %s", n, j, newIP)
				}
				worst = max(worst, at.Sub(t0))
			}
			return nil
		})
		lat = append(lat, float64(worst.Microseconds())/1000)
	}
	slices.Sort(lat)
	p99 := lat[int(float64(len(lat))*0.99+0.5)-1]
	t.Logf("propagation over %d changes: p50 %.1f ms, p99 %.1f ms, max %.1f ms", len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	rss := peakRSSMiB(t, proc.Process.Pid)
	testutil.Bench("propagation_p99_ms", p99, "ms", targetP99MS)
	testutil.Bench("policygen_rss_mib", rss, "MiB", targetRSSMiB)
}

// subscribersOf lists the subscribers whose policy names workload w: those of the workloads before it.
func subscribersOf(w int) []int {
	var out []int
	for d := 1; d <= peersPerWL; d++ {
		src := (w - d + workloads) % workloads
		for j := src; j < subscribers; j += workloads {
			out = append(out, j)
		}
	}
	return out
}

// arrivalLog keeps when each policy arrived at one subscriber.
type arrivalLog struct {
	mu  sync.Mutex
	got []arrival
}

type arrival struct {
	at time.Time
	p  *policy.Policy
}

// apply records p as arrived now; it is the subscriber's apply callback.
func (a *arrivalLog) apply(p *policy.Policy) error {
	at := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, arrival{at, p})
	return nil
}

// held reports whether a policy has arrived.
func (a *arrivalLog) held() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got) > 0
}

// firstWith is when the first policy holding ip arrived after t0.
func (a *arrivalLog) firstWith(ip string, t0 time.Time) (time.Time, bool) {
	want := netip.MustParsePrefix(ip + "/32")
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, g := range a.got {
		if g.at.Before(t0) {
			continue
		}
		for _, r := range g.p.Egress {
			if slices.Contains(r.CIDRs, want) {
				return g.at, true
			}
		}
	}
	return time.Time{}, false
}

func peakRSSMiB(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// parallel runs f(0..n-1) on createWorkers goroutines, failing the test on the first error.
func parallel(t *testing.T, n int, f func(int) error) {
	t.Helper()
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	next := make(chan int)
	for range createWorkers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// createWorkloads creates the Deployments, ReplicaSets, pods (with IPs) and a policy per workload
// naming its next three workloads as egress peers; it returns each workload's pods.
func createWorkloads(t *testing.T, c client.Client) [][]*corev1.Pod {
	ctx := context.Background()
	pods := make([][]*corev1.Pod, workloads)
	yes := true
	parallel(t, workloads, func(w int) error {
		ns, name := nsOf(w), nameOf(w)
		labels := map[string]string{"app": name}
		tpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
		if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			return err
		}
		var peers []v1.Peer
		for d := 1; d <= peersPerWL; d++ {
			p := (w + d) % workloads
			peers = append(peers, v1.Peer{Workload: &v1.WorkloadPeer{Namespace: nsOf(p), WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: nameOf(p)}}})
		}
		wp := &v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deployment-" + name},
			Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: name}, Mode: policy.Protect,
				Egress: []v1.Rule{{Name: "peers", Peers: peers, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}}}}
		if err := c.Create(ctx, wp); err != nil {
			return err
		}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}}
		if err := c.Create(ctx, d); err != nil {
			return err
		}
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-5d8f", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: &yes}}},
			Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}}
		if err := c.Create(ctx, rs); err != nil {
			return err
		}
		for p := range podsPerWL {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-5d8f-%d", name, p), Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes}}},
				Spec: tpl.Spec}
			if err := c.Create(ctx, pod); err != nil {
				return err
			}
			ip := ipOf(w, p, 0)
			pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
			if err := c.Status().Update(ctx, pod); err != nil {
				return err
			}
			pods[w] = append(pods[w], pod)
		}
		return nil
	})
	return pods
}
