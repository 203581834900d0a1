package policyapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/resolve"
)

// reports records accepted reports; the learner is tested on its own.
type reports struct {
	mu    sync.Mutex
	got   []string
	names []string // the entries' DNS names
}

func (r *reports) Accept(_ context.Context, id Identity, rep *policy.Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%s %s %d entries", id.Workload, id.Pod.Name, len(rep.Entries)))
	for _, e := range rep.Entries {
		if e.Name != "" {
			r.names = append(r.names, e.Name)
		}
	}
	return nil
}

type env struct {
	t      *testing.T
	url    string
	client *http.Client
	c      client.Client
	k      pgtest.Cluster
	sink   *reports
	srv    *Server
}

func start(t *testing.T) *env {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reviewer, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, httpClient := pgtest.TLS(t)
	sink := &reports{}
	var srv *Server
	pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		if err := resolve.Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub := resolve.NewHub(mgr.GetCache(), resolve.HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		srv = New(Options{ReportInterval: time.Hour, ReportBurst: 4, MaxReportBytes: 4096, StatusInterval: 100 * time.Millisecond, APIReader: mgr.GetAPIReader(),
			Events: mgr.GetEventRecorder("podwall-policygen")},
			hub, reviewer, mgr.GetCache(), mgr.GetClient(), sink, testr.New(t))
		if err := mgr.Add(hub); err != nil {
			return err
		}
		return mgr.Add(runnable(func(ctx context.Context) error { return srv.Serve(ctx, ln) }))
	})
	return &env{t: t, url: "https://" + ln.Addr().String(), client: httpClient, c: c, k: pgtest.Cluster{T: t, C: c, Cfg: cfg}, sink: sink, srv: srv}
}

// unboundToken is a token of the service account for audience podwall, bound to no pod.
func (e *env) unboundToken(ns, sa string) string {
	e.t.Helper()
	cs, err := kubernetes.NewForConfig(e.k.Cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{policy.TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return tr.Status.Token
}

type runnable func(context.Context) error

func (r runnable) Start(ctx context.Context) error { return r(ctx) }

func (e *env) do(method, path, token string, body []byte, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

func (e *env) policy(token, query string, hdr ...string) (int, *policy.Policy, http.Header) {
	e.t.Helper()
	code, h, body := e.do("GET", "/v1/policy"+query, token, nil, hdr...)
	if code != http.StatusOK {
		return code, nil, h
	}
	p, err := policy.Decode(body)
	if err != nil {
		e.t.Fatalf("served policy does not decode: %v", err)
	}
	return code, p, h
}

func TestPolicyAPI(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pgtest.Namespace(t, e.c, "shop", nil)
	web := e.k.Deployment("shop", "web", "web", "10.1.0.1")
	api := e.k.Deployment("shop", "api", "api", "10.1.0.5")
	e.k.Create(&v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
		Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"}, Mode: policy.Monitor,
			Egress: []v1.Rule{{Name: "api", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}}}}},
	})
	webToken, apiToken := e.k.Token(web[0], "podwall"), e.k.Token(api[0], "podwall")

	var first *policy.Policy
	var etag string
	testutil.Eventually(t, 10*time.Second, func() error {
		code, p, h := e.policy(webToken, "?wait=1")
		if code != http.StatusOK {
			return fmt.Errorf("GET /v1/policy: %d", code)
		}
		first, etag = p, h.Get("ETag")
		return nil
	})
	if etag != `"`+policy.ContentHash(first)+`"` {
		t.Errorf("ETag %s is not the served policy's ContentHash %s", etag, policy.ContentHash(first))
	}
	if first.Workload != "Deployment/web" || first.Mode != policy.Monitor || first.Revision <= 0 ||
		len(first.Egress) != 1 || first.Egress[0].CIDRs[0] != netip.MustParsePrefix("10.1.0.5/32") {
		t.Fatalf("served %+v", first)
	}

	t.Run("unchanged policy is 304 after the wait", func(t *testing.T) {
		start := time.Now()
		code, _, h := e.policy(webToken, fmt.Sprintf("?after=%d&wait=1", first.Revision))
		if code != http.StatusNotModified || h.Get("ETag") != etag || time.Since(start) < 900*time.Millisecond {
			t.Errorf("got %d etag %s after %v, want 304 %s after ~1s", code, h.Get("ETag"), time.Since(start), etag)
		}
		code, _, _ = e.policy(webToken, "?after=0&wait=1", "If-None-Match", etag)
		if code != http.StatusNotModified {
			t.Errorf("with If-None-Match of the current content: %d, want 304", code)
		}
	})

	t.Run("a parked poll returns when a peer's IP changes", func(t *testing.T) {
		type result struct {
			code int
			p    *policy.Policy
		}
		done := make(chan result, 1)
		go func() {
			code, p, _ := e.policy(webToken, fmt.Sprintf("?after=%d&wait=30", first.Revision))
			done <- result{code, p}
		}()
		testutil.Eventually(t, 5*time.Second, func() error {
			if e.subscribersNow() == 0 {
				return fmt.Errorf("poll not parked yet")
			}
			return nil
		})
		e.k.SetIP(api[0], "10.1.0.6")
		select {
		case r := <-done:
			if r.code != http.StatusOK || r.p.Revision <= first.Revision || r.p.Egress[0].CIDRs[0] != netip.MustParsePrefix("10.1.0.6/32") {
				t.Errorf("got %d %+v, want 200 with the new IP and a higher revision", r.code, r.p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("parked poll did not return after the change")
		}
	})

	t.Run("another replica's revision with other content is answered at once", func(t *testing.T) {
		code, p, _ := e.policy(webToken, "?after=999999999&wait=5", "If-None-Match", `"someotherhash"`)
		if code != http.StatusOK || p.Revision <= 999999999 {
			t.Errorf("got %d revision %v, want 200 above 999999999", code, p)
		}
	})

	t.Run("authentication and authorization", func(t *testing.T) {
		tests := []struct {
			name, token, query string
			want               int
		}{
			{"no token", "", "", 401},
			{"garbage token", "not-a-token", "", 401},
			{"wrong audience", e.k.Token(web[0], "other"), "", 401},
			{"not bound to a pod", e.unboundToken("shop", "web"), "", 401},
			{"other workload", webToken, "?workload=shop/Deployment/api", 403},
			{"own workload by name", webToken, "?workload=shop/Deployment/web&wait=0", 200},
			{"workload without a policy", apiToken, "?wait=0", 404},
			{"bad after", webToken, "?after=x", 400},
		}
		for _, tc := range tests {
			if code, _, _ := e.do("GET", "/v1/policy"+tc.query, tc.token, nil); code != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
			}
		}
	})

	t.Run("reports", func(t *testing.T) {
		entry := `{"direction":"egress","peer":"10.1.0.6","protocol":"TCP","port":80,"count":3}`
		// An egress entry may name the DNS name its peer was resolved from: it reaches the sink.
		named := `{"direction":"egress","peer":"203.0.113.7","protocol":"TCP","port":443,"name":"api.stripe.com","count":1}`
		tests := []struct {
			name, token, body string
			want              int
		}{
			{"valid", webToken, `{"revision":1,"entries":[` + entry + `,` + named + `]}`, 202},
			{"naming itself", webToken, `{"namespace":"shop","workload":"Deployment/web","revision":1,"entries":[]}`, 202},
			{"other workload", webToken, `{"workload":"Deployment/api","revision":1,"entries":[]}`, 403},
			{"other pod", webToken, `{"pod":"api-5d8f-0","revision":1,"entries":[]}`, 403},
			{"not json", apiToken, `{"revision":`, 400},
			{"unknown field", apiToken, `{"revision":1,"bogus":true}`, 400},
			{"bad entry", apiToken, `{"revision":1,"entries":[{"direction":"sideways","peer":"10.0.0.1","protocol":"TCP","port":1,"count":1}]}`, 400},
			{"too large", apiToken, `{"revision":1,"entries":[` + strings.Repeat(entry+",", 100) + entry + `]}`, 413},
			{"rate limited", webToken, `{"revision":1,"entries":[]}`, 429},
			{"no token", "", `{"revision":1,"entries":[]}`, 401},
		}
		for _, tc := range tests {
			code, _, body := e.do("POST", "/v1/reports", tc.token, []byte(tc.body))
			if code != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
			}
		}
		e.sink.mu.Lock()
		defer e.sink.mu.Unlock()
		want := []string{"shop/Deployment/web web-5d8f-0 2 entries", "shop/Deployment/web web-5d8f-0 0 entries"}
		if fmt.Sprint(e.sink.got) != fmt.Sprint(want) {
			t.Errorf("accepted %q, want %q", e.sink.got, want)
		}
		if fmt.Sprint(e.sink.names) != "[api.stripe.com]" {
			t.Errorf("names reaching the sink: %q, want [api.stripe.com]", e.sink.names)
		}
	})

	t.Run("status shows this replica's sidecars", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, func() error {
			var p v1.WorkloadPolicy
			if err := e.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "deployment-web"}, &p); err != nil {
				return err
			}
			if len(p.Status.Replicas) != 1 || p.Status.Replicas[0].Sidecars != 1 || p.Status.Replicas[0].Revision == 0 {
				return fmt.Errorf("replicas %+v, want one entry with one sidecar", p.Status.Replicas)
			}
			return nil
		})
	})

	t.Run("a deleted pod's token is refused", func(t *testing.T) {
		if err := e.c.Delete(ctx, web[0]); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if code, _, _ := e.do("GET", "/v1/policy?wait=0", webToken, nil); code != 401 && code != 403 {
				return fmt.Errorf("got %d, want 401 or 403", code)
			}
			return nil
		})
	})
}

// subscribersNow reads the server's gauge of parked polls.
func (e *env) subscribersNow() float64 {
	var m dto.Metric
	if err := e.srv.metrics.subscribers.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

// TestSidecarConfigReports: a sidecar that reports its workload's config file refused gets a Warning
// Event on its pod (once per message), and a sidecar enforcing a weaker mode than its policy's is not
// counted in sync, though it holds the current revision; one that sends no version is counted as of
// an unknown one. The caller is a real pod's bound token.
func TestSidecarConfigReports(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pgtest.Namespace(t, e.c, "demo", nil)
	pods := e.k.Deployment("demo", "client", "client", "10.2.0.1")
	e.k.Create(&v1.WorkloadPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "deployment-client"},
		Spec:       v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: "client"}, Mode: policy.Protect},
	})
	token := e.k.Token(pods[0], "podwall")
	var held *policy.Policy
	var etag string
	testutil.Eventually(t, 10*time.Second, func() error {
		code, p, h := e.policy(token, "?wait=1")
		if code != http.StatusOK {
			return fmt.Errorf("GET /v1/policy: %d", code)
		}
		held, etag = p, h.Get("ETag")
		return nil
	})
	// A poll holding the current content: the tracker knows the sidecar is current.
	if code, _, _ := e.policy(token, fmt.Sprintf("?after=%d&wait=0", held.Revision), "If-None-Match", etag); code != http.StatusNotModified {
		t.Fatalf("poll holding the current policy: %d, want 304", code)
	}

	refusal := `config file /etc/podwall/config.yaml: key "fail-mode": only the platform sets it`
	report := func(mode policy.Mode, file policy.ConfigFileState, msg string) {
		t.Helper()
		body := fmt.Sprintf(`{"revision":%d,"mode":%q,"entries":[],"config":{"mode":"Learn","failMode":"closed","logAllows":"first","logRate":100,"logBurst":200,"file":%q,"message":%q}}`,
			held.Revision, mode, file, msg)
		if code, _, resp := e.do("POST", "/v1/reports", token, []byte(body)); code != http.StatusAccepted {
			t.Fatalf("report: %d %s", code, resp)
		}
	}
	inSync := func(want int32) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			var p v1.WorkloadPolicy
			if err := e.c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "deployment-client"}, &p); err != nil {
				return err
			}
			if len(p.Status.Replicas) != 1 || p.Status.Replicas[0].Sidecars != 1 || p.Status.Replicas[0].SidecarsInSync != want {
				return fmt.Errorf("replicas %+v, want one sidecar, %d in sync", p.Status.Replicas, want)
			}
			// These requests carry no version header, as a sidecar older than it sends.
			if v := p.Status.Replicas[0].SidecarVersions; len(v) != 1 || v[0] != (v1.SidecarVersion{Version: policy.UnknownVersion, Count: 1}) {
				return fmt.Errorf("replica's sidecar versions %+v, want one unknown", v)
			}
			return nil
		})
	}
	events := func() []corev1.Event {
		t.Helper()
		var list corev1.EventList
		if err := e.c.List(ctx, &list, client.InNamespace("demo")); err != nil {
			t.Fatal(err)
		}
		var out []corev1.Event
		for _, ev := range list.Items {
			if ev.Reason == ReasonConfigRefused && ev.InvolvedObject.UID == pods[0].UID {
				out = append(out, ev)
			}
		}
		return out
	}

	inSync(1)
	report(policy.Learn, policy.ConfigRefused, refusal)
	inSync(0)
	report(policy.Learn, policy.ConfigRefused, refusal) // the same refusal again: no second Event
	testutil.Eventually(t, 10*time.Second, func() error {
		evs := events()
		if len(evs) != 1 {
			return fmt.Errorf("%d ConfigRefused events on the pod, want 1", len(evs))
		}
		if ev := evs[0]; ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, refusal) ||
			ev.InvolvedObject.Name != pods[0].Name || ev.InvolvedObject.Kind != "Pod" {
			return fmt.Errorf("event %+v", ev)
		}
		return nil
	})
	report(policy.Protect, policy.ConfigApplied, "")
	inSync(1)
}
