package policygen_test

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
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// sidecarWorld is a real podwall-sidecar guarding a pod namespace (joined to a peer namespace, and to
// the host where a real podwall-policygen serves), subscribed with a real bound token of the pod.
type sidecarWorld struct {
	t          *testing.T
	c          client.Client
	pod, peer  *netnstest.NS
	podIP      netip.Addr
	peerIP     netip.Addr
	bin        string
	args       []string
	sidecar    *exec.Cmd
	logFile    string
	pgStart    func() *exec.Cmd
	policygen  *exec.Cmd
	policyName client.ObjectKey
	// apiURL, token and https reach policygen as the sidecar does.
	apiURL, token string
	https         *http.Client
}

func newSidecarWorld(t *testing.T) *sidecarWorld {
	testutil.RequireRoot(t)
	cfg, c := pgtest.Start(t)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	w := &sidecarWorld{t: t, c: c, pod: netnstest.New(t), peer: netnstest.New(t),
		policyName: client.ObjectKey{Namespace: "shop", Name: "deployment-web"}}
	a, b := netnstest.Pair(t, w.pod, w.peer)
	host, _ := netnstest.PairHost(t, w.pod)
	w.podIP, w.peerIP = a.Addr.Addr(), b.Addr.Addr()
	for _, port := range []uint16{80, 81, 8080} {
		w.peer.Serve(t, netip.AddrPortFrom(w.peerIP, port).String())
	}

	pgBin, scBin := pgtest.BuildPolicygen(t), pgtest.Build(t, "podwall-sidecar")
	pgtest.Namespace(t, c, "podwall-system", nil)
	applyManifest(t, c, "rbac.yaml")
	kubeconfig := pgtest.Kubeconfig(t, cfg, "system:serviceaccount:podwall-system:podwall-policygen")
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	web := k.Deployment("shop", "web", "web", w.podIP.String())
	k.Deployment("shop", "api", "api", w.peerIP.String())

	certDir, caPEM, https := pgtest.CertDir(t, host.Addr.Addr().AsSlice())
	w.https = https
	_, port, _ := net.SplitHostPort(pgtest.FreeAddr(t))
	apiAddr := net.JoinHostPort(host.Addr.Addr().String(), port)
	w.pgStart = func() *exec.Cmd {
		return pgtest.StartProcess(t, pgBin, []string{"KUBECONFIG=" + kubeconfig},
			"--api-addr="+apiAddr, "--cert-mode=external", "--cert-dir="+certDir, "--metrics-addr=0",
			"--health-addr=0", "--namespace=podwall-system", "--replica-name=r0", "--leader-elect=false",
			"--learn-quiet-period=0", "--report-interval=1ms")
	}
	w.policygen = w.pgStart()
	testutil.Eventually(t, 60*time.Second, func() error { return c.Get(context.Background(), w.policyName, &v1.WorkloadPolicy{}) })

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	w.token, w.apiURL = k.Token(web[0], "podwall"), "https://"+apiAddr
	if err := os.WriteFile(tokenFile, []byte(w.token), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	w.bin, w.logFile = scBin, filepath.Join(dir, "sidecar.log")
	w.args = []string{"netns", "exec", w.pod.Name, scBin, "--config=", "--policygen-url=https://" + apiAddr,
		"--policygen-token-file=" + tokenFile, "--policygen-ca=" + string(caPEM), "--policy-cache-dir=" + cache,
		"--listen-addr=127.0.0.1:9947", "--log-allows=all", "--pod-name=" + web[0].Name, "--pod-namespace=shop",
		"--workload=Deployment/web"}
	return w
}

// startSidecar starts the sidecar and waits until it is ready. Its stdout and stderr go to one log.
func (w *sidecarWorld) startSidecar() {
	t := w.t
	t.Helper()
	log, err := os.OpenFile(w.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", w.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.Close()
	w.sidecar = cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		if t.Failed() {
			out, _ := os.ReadFile(w.logFile)
			t.Logf("sidecar log:\n%s", out)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := w.get("/readyz")
		return err
	})
}

// get fetches a path of the sidecar's HTTP endpoint, from inside the pod namespace.
func (w *sidecarWorld) get(path string) (string, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return w.pod.Dial(network, addr, time.Second)
		}}}
	resp, err := hc.Get("http://127.0.0.1:9947" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", path, resp.Status)
	}
	return string(body), nil
}

// metric reads one unlabelled series of the sidecar's metrics.
func (w *sidecarWorld) metric(name string) float64 {
	body, err := w.get("/metrics")
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func (w *sidecarWorld) waitMetric(name string, ok func(float64) bool) {
	w.t.Helper()
	testutil.Eventually(w.t, 60*time.Second, func() error {
		if v := w.metric(name); !ok(v) {
			return fmt.Errorf("%s = %v", name, v)
		}
		return nil
	})
}

func (w *sidecarWorld) dial(port int) error {
	c, err := w.pod.Dial("tcp", netip.AddrPortFrom(w.peerIP, uint16(port)).String(), 3*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// mustConnect and mustRefuse assert the datapath's answer for the peer's port.
func (w *sidecarWorld) mustConnect(port int) {
	w.t.Helper()
	if err := w.dial(port); err != nil {
		w.t.Fatalf("connection to the peer's port %d: %v", port, err)
	}
}

func (w *sidecarWorld) mustRefuse(port int) {
	w.t.Helper()
	start := time.Now()
	if err := w.dial(port); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 100*time.Millisecond {
		w.t.Fatalf("connection to the peer's port %d: %v after %v, want refused within 100ms", port, err, time.Since(start))
	}
}

// update changes the WorkloadPolicy and returns once the sidecar runs a revision that includes the
// change: policygen's revisions are at least the resourceVersion of what they were resolved from.
func (w *sidecarWorld) update(change func(*v1.WorkloadPolicy)) {
	w.t.Helper()
	var wp v1.WorkloadPolicy
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := w.c.Get(context.Background(), w.policyName, &wp); err != nil {
			return err
		}
		change(&wp)
		return w.c.Update(context.Background(), &wp)
	})
	if err != nil {
		w.t.Fatal(err)
	}
	rv, err := strconv.ParseFloat(wp.ResourceVersion, 64)
	if err != nil {
		w.t.Fatal(err)
	}
	w.waitMetric("podwall_policy_revision", func(v float64) bool { return v >= rv })
}

// appliedRevisions lists, in order, the revisions the sidecar's log says it applied from policygen.
func (w *sidecarWorld) appliedRevisions() []int64 {
	data, _ := os.ReadFile(w.logFile)
	var revs []int64
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg      string `json:"msg"`
			Revision int64  `json:"revision"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "policy applied" {
			revs = append(revs, line.Revision)
		}
	}
	return revs
}

// mustBeForbidden sends a request to policygen with the sidecar's token and wants 403.
func (w *sidecarWorld) mustBeForbidden(method, path string, body []byte) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.apiURL+path, bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.https.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		w.t.Fatalf("%s %s with another workload's name: %s, want 403", method, path, resp.Status)
	}
}

func apiPeer() v1.Peer {
	return v1.Peer{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}
}

// TestSidecarFollowsPolicygen runs the real sidecar against the real policygen: the first policy in
// force before ready, learning from reports,
// a policy change reaching the datapath, policygen going away and coming back without the enforcement
// changing or a revision being lost, and a sidecar restarted while policygen is down enforcing its
// cached policy before it turns ready.
func TestSidecarFollowsPolicygen(t *testing.T) {
	w := newSidecarWorld(t)
	w.startSidecar()
	// A new sidecar turns ready only once policygen's first policy is in force, so that the app does
	// not start under the deny-all baseline.
	if rev := w.metric("podwall_policy_revision"); rev <= 0 {
		t.Fatalf("ready at revision %v, before policygen's first policy", rev)
	}

	// Learn: a connection is allowed, reported, and becomes a learned rule.
	w.mustConnect(8080)
	testutil.Eventually(t, 60*time.Second, func() error {
		var wp v1.WorkloadPolicy
		if err := w.c.Get(context.Background(), w.policyName, &wp); err != nil {
			return err
		}
		for _, r := range wp.Spec.Egress {
			if r.Origin == policy.OriginLearned && slices.ContainsFunc(r.Ports, func(p v1.Port) bool { return p.Port == 8080 }) {
				return nil
			}
		}
		return fmt.Errorf("no learned egress rule for port 8080 yet: %+v", wp.Spec.Egress)
	})

	// Protect: the learned flow still works, anything else is refused fast.
	w.update(func(wp *v1.WorkloadPolicy) { wp.Spec.Mode = policy.Protect })
	w.mustConnect(8080)
	w.mustRefuse(81)

	// policygen goes away: enforcement is unchanged, and the sidecar says it lost policygen.
	w.policygen.Process.Kill()
	w.policygen.Wait()
	w.waitMetric("podwall_policygen_connected", func(v float64) bool { return v == 0 })
	w.mustConnect(8080)
	w.mustRefuse(81)

	// policygen comes back; the next change arrives.
	w.policygen = w.pgStart()
	w.update(func(wp *v1.WorkloadPolicy) {
		wp.Spec.Egress = append(wp.Spec.Egress, v1.Rule{Name: "api-81", Origin: policy.OriginUser, Peers: []v1.Peer{apiPeer()},
			Ports: []v1.Port{{Protocol: "TCP", Port: 81}}})
	})
	w.mustConnect(81)
	revs := w.appliedRevisions()
	for i := range revs {
		if len(revs) < 3 || i > 0 && revs[i] <= revs[i-1] {
			t.Fatalf("revisions applied %v: want at least 3, strictly increasing (none lost or repeated)", revs)
		}
	}
	// The sidecar's token speaks for its own workload only.
	w.mustBeForbidden(http.MethodGet, "/v1/policy?wait=1&workload=shop/Deployment/api", nil)
	report, _ := json.Marshal(policy.Report{Namespace: "shop", Workload: "Deployment/api",
		Entries: []policy.ReportEntry{{Direction: policy.Egress, Peer: w.peerIP, Protocol: policy.TCP, Port: 9, Count: 1}}})
	w.mustBeForbidden(http.MethodPost, "/v1/reports", report)

	// The sidecar is killed and policygen is down: the restarted sidecar enforces its cache before ready.
	w.policygen.Process.Kill()
	w.policygen.Wait()
	w.sidecar.Process.Kill()
	w.sidecar.Wait()
	// What it applied last, read once nothing more can arrive: a revision may still have come after
	// the read above (a restarted policygen re-issues the same content above the sidecar's revision).
	revs = w.appliedRevisions()
	w.startSidecar()
	if got := w.metric("podwall_policy_revision"); got != float64(revs[len(revs)-1]) {
		t.Fatalf("restarted sidecar runs revision %v, want the cached %d", got, revs[len(revs)-1])
	}
	w.mustConnect(81)
	w.mustConnect(8080)
	w.mustRefuse(80)
}
