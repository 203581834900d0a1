package policygen_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestWeakenedSidecars: policygen.Run in-process, and four pods of one workload whose sidecars (the
// sidecar's own client, with real bound tokens) poll it: one failing closed and never tampered with,
// one configured to fail open, one whose ruleset another process changed a minute ago, one whose was
// changed longer ago than WeakenedFor. The WorkloadPolicy's status counts the two in between as
// weakened, `kubectl get wp` shows them in the Weakened column, and the replica's entry names the
// pods. A guard header not of the protocol's form is refused.
func TestWeakenedSidecars(t *testing.T) {
	cfg, c := pgtest.Start(t)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "podwall-system", nil)
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	web := k.Deployment("shop", "web", "web", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")

	pg := runPolicygen(t, cfg, c)
	guards := []policy.Guard{
		{},
		{FailOpen: true},
		{Tampered: time.Now().Add(-time.Minute)},
		{Tampered: time.Now().Add(-v1.WeakenedFor - time.Minute)},
	}
	var subs []*applied
	for i, g := range guards {
		subs = append(subs, subscribe(t, pg.clientWith(k.Token(web[i], "podwall"), pgclient.Options{Guard: func() policy.Guard { return g }})))
	}
	var names []string
	for _, p := range web {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web"}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, s := range subs {
			if s.latest() == nil {
				return fmt.Errorf("sidecar %d holds no policy yet", i)
			}
		}
		var wp v1.WorkloadPolicy
		if err := c.Get(context.Background(), key, &wp); err != nil {
			return err
		}
		if st := wp.Status; st.Sidecars != 4 || st.WeakenedSidecars != 2 || len(st.Replicas) != 1 || !slices.Equal(st.Replicas[0].Pods, names) {
			return fmt.Errorf("status: %d sidecars, %d weakened, replicas %+v; want 4, 2 weakened, the pods %v named", st.Sidecars, st.WeakenedSidecars, st.Replicas, names)
		}
		return nil
	})
	if got := printed(t, cfg, key, "Weakened"); got != float64(2) {
		t.Errorf("kubectl get wp: Weakened %v, want 2", got)
	}

	for _, bad := range []string{"fail=maybe", "tampered=2026-12-02T01:00:00Z", "fail=open; tampered=soon"} {
		req, err := http.NewRequest("GET", "https://"+pg.addr+policy.PolicyPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+k.Token(web[0], "podwall"))
		req.Header.Set(policy.HeaderGuard, bad)
		resp, err := pg.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a poll with guard %q: %d, want 400", bad, resp.StatusCode)
		}
	}
}
