package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// world is a real API server with seeded workloads, policygen running against it as its own
// ServiceAccount under the manifests' RBAC, and two UI callers: a viewer and an operator.
type world struct {
	t        *testing.T
	c        client.Client
	cluster  pgtest.Cluster
	url      string // https://addr/ui/
	https    *http.Client
	pods     map[string]*corev1.Pod // by workload name
	viewer   string                 // token of a user who may read policies
	operator string                 // token of a user who may also patch them
}

func newWorld(t *testing.T) *world {
	cfg, c := pgtest.Start(t)
	w := &world{t: t, c: c, cluster: pgtest.Cluster{T: t, C: c, Cfg: cfg}, pods: map[string]*corev1.Pod{}}
	pgtest.Namespace(t, c, "podwall-system", nil)
	applyFile(t, c, filepath.Join(testenv.CRDDir(), "..", "policygen", "rbac.yaml"))
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	pgtest.Namespace(t, c, "billing", map[string]string{"podwall.io/inject": "enabled"})
	for i, name := range []string{"web", "api", "db"} {
		w.pods[name] = w.cluster.Deployment("shop", name, name, fmt.Sprintf("10.1.0.%d", i+1))[0]
	}
	w.pods["ledger"] = w.cluster.Deployment("billing", "ledger", "ledger", "10.2.0.1")[0]
	w.startPolicygen(cfg)
	w.seedPolicies()
	w.viewer = w.user(cfg, "viewer", "get", "list", "watch")
	w.operator = w.user(cfg, "operator", "get", "list", "watch", "patch")
	return w
}

// applyFile creates every object of a multi-document YAML file.
func applyFile(t *testing.T, c client.Client, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("decode %s: %v", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.Create(context.Background(), &obj); err != nil {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}

// startPolicygen runs policygen.Run in this process, as its ServiceAccount, serving on a fresh
// self-signed certificate, until the test ends.
func (w *world) startPolicygen(admin *rest.Config) {
	t := w.t
	certDir, _, https := pgtest.CertDir(t)
	addr := pgtest.FreeAddr(t)
	opts := policygen.Options{APIAddr: addr, TLS: certs.Serving{External: true, CertDir: certDir}, MetricsAddr: "0", HealthAddr: "0",
		Replica: "r0", ReportInterval: time.Millisecond, ReportBurst: 100, Registerer: prometheus.NewRegistry()}
	restCfg := rest.CopyConfig(admin)
	restCfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:podwall-system:podwall-policygen"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- policygen.Run(ctx, restCfg, opts, testr.New(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policygen: %v", err)
		}
	})
	w.url, w.https = "https://"+addr+"/ui/", https
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := https.Get(w.url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /ui/: %s", resp.Status)
		}
		return nil
	})
}

// seedPolicies waits for the generated policies and gives them modes and a user rule, as people would.
func (w *world) seedPolicies() {
	modes := map[string]policy.Mode{"deployment-web": policy.Protect, "deployment-api": policy.Monitor, "deployment-db": policy.Protect}
	for name, mode := range modes {
		key := client.ObjectKey{Namespace: "shop", Name: name}
		testutil.Eventually(w.t, 60*time.Second, func() error { return w.c.Get(context.Background(), key, &v1.WorkloadPolicy{}) })
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var p v1.WorkloadPolicy
			if err := w.c.Get(context.Background(), key, &p); err != nil {
				return err
			}
			p.Spec.Mode = mode
			if name == "deployment-web" {
				p.Spec.Egress = append(p.Spec.Egress, v1.Rule{Name: "web-to-api", Origin: policy.OriginUser,
					Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
					v1.Rule{Name: "stripe", Origin: policy.OriginUser, Peers: []v1.Peer{{FQDN: "api.stripe.com"}, {FQDN: "*.stripe.com"}},
						Ports: []v1.Port{{Protocol: "TCP", Port: 443}}})
				p.Spec.RestrictDNS = true
			}
			return w.c.Update(context.Background(), &p)
		})
		if err != nil {
			w.t.Fatalf("seed %s: %v", name, err)
		}
	}
	testutil.Eventually(w.t, 60*time.Second, func() error {
		return w.c.Get(context.Background(), client.ObjectKey{Namespace: "billing", Name: "deployment-ledger"}, &v1.WorkloadPolicy{})
	})
}

// user creates namespace ops if need be and returns a token of a new ServiceAccount there (token).
func (w *world) user(admin *rest.Config, name string, verbs ...string) string {
	ctx := context.Background()
	if err := w.c.Get(ctx, client.ObjectKey{Name: "ops"}, &corev1.Namespace{}); err != nil {
		pgtest.Namespace(w.t, w.c, "ops", nil)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		w.t.Fatal(err)
	}
	return token(w.t, w.cluster, cs, name, verbs...)
}

// report posts a report as the workload's pod would, with one entry.
func (w *world) report(workloadName string, mode policy.Mode, e policy.ReportEntry) {
	w.t.Helper()
	w.post(workloadName, policy.Report{Mode: mode, Entries: []policy.ReportEntry{e}})
}

// post posts r as the workload's pod would, naming the pod.
func (w *world) post(workloadName string, r policy.Report) {
	w.t.Helper()
	pod := w.pods[workloadName]
	r.Namespace, r.Workload, r.Pod = pod.Namespace, "Deployment/"+workloadName, pod.Name
	body, _ := json.Marshal(r)
	req, _ := http.NewRequest("POST", strings.TrimSuffix(w.url, "/ui/")+"/v1/reports", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+w.cluster.Token(pod, "podwall"))
	resp, err := w.https.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		w.t.Fatalf("report from %s: %s", workloadName, resp.Status)
	}
}

// poll polls the workload's policy once, as its pod's sidecar of version v guarding it as guard
// (policy.HeaderGuard) would.
func (w *world) poll(workloadName, v, guard string) {
	w.t.Helper()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(w.url, "/ui/")+policy.PolicyPath+"?wait=0", nil)
	req.Header.Set("Authorization", "Bearer "+w.cluster.Token(w.pods[workloadName], "podwall"))
	req.Header.Set(policy.HeaderVersion, v)
	req.Header.Set(policy.HeaderGuard, guard)
	resp, err := w.https.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("poll from %s: %s", workloadName, resp.Status)
	}
}

// entry is one reported connection that the mode's default decided, as a sidecar reports it.
func entry(verdict policy.Verdict, dir policy.Direction, peer string, port uint16) policy.ReportEntry {
	return policy.ReportEntry{Direction: dir, Peer: netip.MustParseAddr(peer), Protocol: policy.TCP, Port: port, Count: 1,
		Verdict: verdict, Rule: "default", Evaluator: "default", LastSeen: time.Now()}
}

// chromium finds the browser, or skips the test saying how to get one (fails it in CI).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	testutil.SkipUnlessCI(t, "no Chromium binary on PATH (apt-get install -y chromium): the browser test of the UI did not run")
	return ""
}

// browser starts headless Chromium with a fresh profile; it ends with the test.
func browser(t *testing.T) context.Context {
	path := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		// policygen serves a self-signed certificate made for this test.
		chromedp.IgnoreCertErrors,
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// screenshot saves the whole page as <artifacts>/<name>.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("PODWALL_UI_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
}
