package policygen_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/sidecar/report"
)

// TestSpoofedPodIsItsOwnWorkload: a namespace user's bare pod that claims Deployment payments'
// ReplicaSet as its controller, with a UID that is not the ReplicaSet's, running as payments' service
// account, is served a policy of its own (Pod/spoof), its reports (with a real token bound to it)
// become learned rules of that policy and never of payments', it may not report as payments, and its
// address is not among payments' where another workload's rule names payments as a peer.
func TestSpoofedPodIsItsOwnWorkload(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "podwall-system", nil)
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	payments := k.Deployment("shop", "payments", "payments", "10.1.0.1")[0]
	db := k.Deployment("shop", "db", "db", "10.1.0.5")[0]
	pg := runPolicygen(t, cfg, c)

	yes := true
	rs := payments.OwnerReferences[0]
	spoof := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "spoof", Labels: payments.Labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: rs.APIVersion, Kind: rs.Kind, Name: rs.Name, UID: "not-the-rs", Controller: &yes}}},
		Spec: payments.Spec}
	if err := k.PodCreator("shop", "mallory").Create(ctx, spoof); err != nil {
		t.Fatalf("mallory creates her pod: %v", err)
	}
	k.SetIP(spoof, "10.1.0.66") // the kubelet's doing, not mallory's
	token := k.Token(spoof, "podwall")

	cl := pg.client(token)
	got := subscribe(t, cl)
	testutil.Eventually(t, 30*time.Second, func() error {
		if p := got.latest(); p == nil || p.Workload != "Pod/spoof" {
			return fmt.Errorf("spoof's sidecar holds %+v", p)
		}
		return nil
	})

	// Her report names payments: refused. Her own becomes a learned rule of pod-spoof.
	body := []byte(`{"workload":"Deployment/payments","revision":1,"entries":[{"direction":"egress","peer":"10.1.0.5","protocol":"TCP","port":5432,"count":1}]}`)
	req, err := http.NewRequest(http.MethodPost, "https://"+pg.addr+policy.ReportsPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := pg.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("report as payments: %s, want 403", resp.Status)
	}
	obs := report.New(100)
	obs.Add(report.Key{Direction: policy.Egress, Peer: netip.MustParseAddr("10.1.0.5"), Protocol: policy.TCP, Port: 5432}, report.Outcome{Verdict: policy.Allow}, time.Now())
	var wg sync.WaitGroup
	wg.Go(func() {
		cl.ReportLoop(t.Context(), obs, func() policy.Report { return policy.Report{Revision: got.latest().Revision, Mode: policy.Learn} })
	})
	t.Cleanup(wg.Wait)
	learned := func(name string) (bool, error) {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &wp); err != nil {
			return false, err
		}
		return slices.ContainsFunc(wp.Spec.Egress, func(r v1.Rule) bool {
			return r.Origin == policy.OriginLearned && slices.ContainsFunc(r.Ports, func(p v1.Port) bool { return p.Port == 5432 })
		}), nil
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if ok, err := learned("pod-spoof"); !ok {
			return fmt.Errorf("no learned rule for port 5432 in pod-spoof yet (%v)", err)
		}
		return nil
	})
	if ok, err := learned("deployment-payments"); ok || err != nil {
		t.Errorf("payments' policy learned from her report (%v)", err)
	}

	// db admits payments: the rule holds payments' pod, not hers.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "deployment-db"}, &wp); err != nil {
			return err
		}
		wp.Spec.Ingress = append(wp.Spec.Ingress, v1.Rule{Name: "payments", Origin: policy.OriginUser,
			Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "payments"}}}}})
		return c.Update(ctx, &wp)
	})
	if err != nil {
		t.Fatal(err)
	}
	dbPolicy := subscribe(t, pg.client(k.Token(db, "podwall")))
	testutil.Eventually(t, 30*time.Second, func() error {
		p := dbPolicy.latest()
		if p == nil {
			return fmt.Errorf("db's sidecar holds no policy")
		}
		for _, r := range p.Ingress {
			if r.ID == "ingress/payments" && slices.Equal(r.CIDRs, []netip.Prefix{netip.MustParsePrefix("10.1.0.1/32")}) {
				if name, ok := p.Names[netip.MustParseAddr("10.1.0.66")]; ok {
					return fmt.Errorf("her address is named %q", name)
				}
				return nil
			}
		}
		return fmt.Errorf("db's policy (revision %d) has no rule holding just payments' pod: %+v", p.Revision, p.Ingress)
	})
}
