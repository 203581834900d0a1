package policygen_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestTwoReplicasSurviveTheLossOfOne runs two real podwall-policygen processes (under the RBAC of
// manifests/policygen) against a real API server with sidecars (the sidecar's policy client with real
// bound tokens) subscribed to both, kills one, and checks that every sidecar keeps its policy, gets the
// next change from the survivor, and that the survivor takes over the writing (leader election). The
// replicas keep their serving certificate themselves (managed), racing to create it at start: the
// sidecars trust the one CA bundle they publish, whichever replica they reach.
func TestTwoReplicasSurviveTheLossOfOne(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	bin := pgtest.BuildPolicygen(t)
	pgtest.Namespace(t, c, "podwall-system", nil)
	// The replicas run as policygen's ServiceAccount under the manifests' RBAC, so that a missing
	// permission fails here.
	applyManifest(t, c, "rbac.yaml")
	kubeconfig := pgtest.Kubeconfig(t, cfg, "system:serviceaccount:podwall-system:podwall-policygen")
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	web := k.Deployment("shop", "web", "web", "10.1.0.1", "10.1.0.2", "10.1.0.3")
	api := k.Deployment("shop", "api", "api", "10.1.0.9")

	addrs := []string{pgtest.FreeAddr(t), pgtest.FreeAddr(t)}
	start := func(i int) *exec.Cmd {
		return pgtest.StartProcess(t, bin, []string{"KUBECONFIG=" + kubeconfig},
			"--api-addr="+addrs[i], "--cert-hosts=127.0.0.1", "--metrics-addr=0", "--health-addr=0",
			"--namespace=podwall-system", fmt.Sprintf("--replica-name=replica-%d", i), "--learn-quiet-period=0", "--report-interval=1ms", "--replica-status-ttl=10s")
	}
	replicas := []*exec.Cmd{start(0), start(1)}
	var published corev1.ConfigMap
	testutil.Eventually(t, 60*time.Second, func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: "podwall-system", Name: "podwall-policygen-ca"}, &published)
	})
	httpClient := pgtest.Trusting(t, []byte(published.Data[certs.KeyCABundle]))

	// The leader generates web's policy; give it a user rule naming api, whose pod IP will change.
	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web"}
	testutil.Eventually(t, 60*time.Second, func() error { return c.Get(ctx, key, &v1.WorkloadPolicy{}) })
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		wp.Spec.Egress = append(wp.Spec.Egress, v1.Rule{Name: "api", Origin: policy.OriginUser,
			Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "api"}}}}})
		return c.Update(ctx, &wp)
	})
	if err != nil {
		t.Fatal(err)
	}

	// Two sidecars per web pod, one starting on each replica.
	var subs []*applied
	for i := range 2 * len(web) {
		// The URL names the Service; the transport chooses the replica.
		cl, err := pgclient.New(pgclient.Options{URL: "https://127.0.0.1", TokenFile: pgtest.TokenFile(t, k.Token(web[i/2], "podwall")),
			Transport: service(httpClient, addrs[i%2], addrs[(i+1)%2]), Wait: 20 * time.Second,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, testr.New(t).WithValues("sidecar", i))
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, subscribe(t, cl))
	}
	allHold := func(ip string) func() error {
		return func() error {
			for i, s := range subs {
				if p := s.latest(); p == nil || !holds(p, ip) {
					return fmt.Errorf("sidecar %d holds %v, want a policy allowing api at %s", i, p, ip)
				}
			}
			return nil
		}
	}
	testutil.Eventually(t, 30*time.Second, allHold("10.1.0.9"))

	// Lose replica 0 outright.
	if err := replicas[0].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = replicas[0].Wait()
	k.SetIP(api[0], "10.1.0.10")
	testutil.Eventually(t, 15*time.Second, allHold("10.1.0.10"))
	for i, s := range subs {
		if revs := s.revisions(); !increasing(revs) {
			t.Errorf("sidecar %d got revisions %v, want strictly increasing", i, revs)
		}
	}

	// The survivor writes: a new workload gets its policy (after the lease of a killed leader expires).
	k.Deployment("shop", "worker", "", "10.1.0.20")
	testutil.Eventually(t, 60*time.Second, func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "deployment-worker"}, &v1.WorkloadPolicy{})
	})

	// Reports reach the survivor and become learned rules.
	report := []byte(`{"revision":1,"entries":[{"direction":"egress","peer":"10.1.0.20","protocol":"TCP","port":7000,"count":1}]}`)
	req, _ := http.NewRequest("POST", "https://"+addrs[1]+"/v1/reports", bytes.NewReader(report))
	req.Header.Set("Authorization", "Bearer "+k.Token(web[0], "podwall"))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("report: %d", resp.StatusCode)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		for _, r := range wp.Spec.Egress {
			if r.Name == "l-deployment-worker" && r.Origin == policy.OriginLearned {
				return nil
			}
		}
		return fmt.Errorf("no learned rule for worker in %+v", wp.Spec.Egress)
	})

	// The status counts the survivor's sidecars (one per pod), all in sync.
	testutil.Eventually(t, 60*time.Second, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		if wp.Status.Sidecars != int32(len(web)) || wp.Status.SidecarsInSync != int32(len(web)) {
			return fmt.Errorf("status sidecars %d in sync %d (replicas %+v), want %d", wp.Status.Sidecars, wp.Status.SidecarsInSync, wp.Status.Replicas, len(web))
		}
		return nil
	})

	// Rolling restart: replica 0 comes back, then replica 1 stops gracefully (SIGTERM ends its
	// long-polls, hands over the lease and zeroes its status entry); the sidecars follow replica 0.
	replicas[0] = start(0)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := httpClient.Get("https://" + addrs[0] + "/v1/policy")
		return err
	})
	if err := replicas[1].Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := replicas[1].Wait(); err != nil {
		t.Errorf("replica 1 after SIGTERM: %v", err)
	}
	k.SetIP(api[0], "10.1.0.11")
	testutil.Eventually(t, 15*time.Second, allHold("10.1.0.11"))
	testutil.Eventually(t, 60*time.Second, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		for _, r := range wp.Status.Replicas {
			if r.Name == "replica-1" && r.Sidecars != 0 {
				return fmt.Errorf("stopped replica still counts %d sidecars", r.Sidecars)
			}
		}
		if wp.Status.Sidecars != int32(len(web)) {
			return fmt.Errorf("status sidecars %d (replicas %+v), want %d", wp.Status.Sidecars, wp.Status.Replicas, len(web))
		}
		return nil
	})
}

// service plays the Service in front of the replicas for one sidecar: each new connection goes to the
// first of addrs that accepts it, so the sidecar stays on its replica while that one lives and moves on
// when it is gone. base trusts policygen's certificate.
func service(base *http.Client, addrs ...string) http.RoundTripper {
	tr := base.Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var errs []error
		for _, addr := range addrs {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				return conn, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	return tr
}

// holds reports whether p has an egress rule allowing ip.
func holds(p *policy.Policy, ip string) bool {
	a := netip.MustParseAddr(ip)
	for _, r := range p.Egress {
		for _, c := range r.CIDRs {
			if c.Contains(a) && r.ID == "egress/api" {
				return true
			}
		}
	}
	return false
}
