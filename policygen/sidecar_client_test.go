package policygen_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/sidecar/report"
)

// TestSidecarClientAgainstPolicygen runs policygen.Run in-process and the sidecar's own policygen
// client (api/policy/pgclient) against it: the client gets its workload's generated policy and each
// revision after a change, and its reports become learned rules. policygen keeps its own serving
// certificate (managed), and the client verifies it with the CA bundle policygen publishes.
func TestSidecarClientAgainstPolicygen(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "podwall-system", nil)
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	web := k.Deployment("shop", "web", "web", "10.1.0.1")
	api := k.Deployment("shop", "api", "api", "10.1.0.9")

	pg := runPolicygen(t, cfg, c)
	cl := pg.client(k.Token(web[0], "podwall"))
	got := subscribe(t, cl)
	// The generated policy arrives: Learn mode, the DNS rule.
	testutil.Eventually(t, 30*time.Second, func() error {
		p := got.latest()
		if p == nil || p.Workload != "Deployment/web" || p.Mode != policy.Learn || len(p.Egress) == 0 || p.Egress[0].ID != "egress/m-dns" {
			return fmt.Errorf("client holds %+v", p)
		}
		return nil
	})

	// Reports from the client's ReportLoop become a learned rule naming api, which resolves to its IP.
	obs := report.New(100)
	obs.Add(report.Key{Direction: policy.Egress, Peer: netip.MustParseAddr("10.1.0.9"), Protocol: policy.TCP, Port: 8000}, report.Outcome{Verdict: policy.Allow}, time.Now())
	var wg sync.WaitGroup
	wg.Go(func() {
		cl.ReportLoop(t.Context(), obs, func() policy.Report { return policy.Report{Revision: got.latest().Revision, Mode: policy.Learn} })
	})
	t.Cleanup(wg.Wait)
	hasAPI := func(ip string) func() error {
		return func() error {
			p := got.latest()
			for _, r := range p.Egress {
				if r.ID == "egress/l-deployment-api" && len(r.CIDRs) == 1 && r.CIDRs[0] == netip.MustParsePrefix(ip+"/32") {
					return nil
				}
			}
			return fmt.Errorf("client's policy (revision %d) has no learned rule for api at %s: %+v", p.Revision, ip, p.Egress)
		}
	}
	testutil.Eventually(t, 30*time.Second, hasAPI("10.1.0.9"))

	// A peer's new IP reaches the client under the same rule id; a user's mode change too.
	k.SetIP(api[0], "10.1.0.10")
	testutil.Eventually(t, 15*time.Second, hasAPI("10.1.0.10"))
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "deployment-web"}, &wp); err != nil {
			return err
		}
		wp.Spec.Mode = policy.Protect
		return c.Update(ctx, &wp)
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		if p := got.latest(); p.Mode != policy.Protect {
			return fmt.Errorf("client runs mode %s", p.Mode)
		}
		return nil
	})
	if revs := got.revisions(); !increasing(revs) {
		t.Errorf("client got revisions %v, want strictly increasing", revs)
	}
}

// inproc is policygen.Run in this process, serving its policy API on addr with certFile.
type inproc struct {
	t     *testing.T
	addr  string
	ca    []byte       // the CA bundle policygen published
	https *http.Client // trusts ca
}

// runPolicygen runs policygen.Run against cfg until the test ends; c reads what it publishes.
func runPolicygen(t *testing.T, cfg *rest.Config, c client.Client) *inproc {
	addr := pgtest.FreeAddr(t)
	opts := policygen.Options{APIAddr: addr, TLS: certs.Serving{ExtraHosts: []string{"127.0.0.1"}}, MetricsAddr: "0", HealthAddr: "0",
		Replica: "inproc", Registerer: prometheus.NewRegistry()}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- policygen.Run(runCtx, cfg, opts, testr.New(t)) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("policygen.Run: %v", err)
		}
	})
	// policygen keeps its own certificate; clients trust the CA bundle it publishes.
	var published corev1.ConfigMap
	testutil.Eventually(t, 30*time.Second, func() error {
		return c.Get(context.Background(), client.ObjectKey{Namespace: "podwall-system", Name: "podwall-policygen-ca"}, &published)
	})
	ca := []byte(published.Data[certs.KeyCABundle])
	return &inproc{t: t, addr: addr, ca: ca, https: pgtest.Trusting(t, ca)}
}

// client is the sidecar's policygen client with token, of this build's version.
func (pg *inproc) client(token string) *pgclient.Client {
	return pg.clientWith(token, pgclient.Options{})
}

// clientWith is the sidecar's policygen client with token, saying what o's Version and Guard say
// of it.
func (pg *inproc) clientWith(token string, o pgclient.Options) *pgclient.Client {
	cl, err := pgclient.New(pgclient.Options{URL: "https://" + pg.addr, TokenFile: pgtest.TokenFile(pg.t, token), CA: pg.ca,
		Version: o.Version, Guard: o.Guard, Wait: 5 * time.Second, ReportInterval: 200 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, testr.New(pg.t))
	if err != nil {
		pg.t.Fatal(err)
	}
	return cl
}

// subscribe runs cl's subscription, from no policy, until the test ends and returns what it applies.
func subscribe(t *testing.T, cl *pgclient.Client) *applied {
	a := &applied{}
	var wg sync.WaitGroup
	wg.Go(func() { cl.Subscribe(t.Context(), nil, a.apply) })
	t.Cleanup(wg.Wait)
	return a
}

// applied records the policies a subscription applied, in order.
type applied struct {
	mu  sync.Mutex
	got []*policy.Policy
}

func (a *applied) apply(p *policy.Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, p)
	return nil
}

// latest is the policy in force, nil before the first.
func (a *applied) latest() *policy.Policy {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) == 0 {
		return nil
	}
	return a.got[len(a.got)-1]
}

func (a *applied) revisions() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	revs := make([]int64, len(a.got))
	for i, p := range a.got {
		revs[i] = p.Revision
	}
	return revs
}

func increasing(revs []int64) bool {
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			return false
		}
	}
	return true
}
