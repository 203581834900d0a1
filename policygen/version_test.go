package policygen_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/policy/pgclient"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/internal/version"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestOutdatedSidecars is the status half of an upgrade: policygen.Run in-process, and two pods of
// one workload whose sidecars (the sidecar's own client, with real bound tokens) poll it, one of
// policygen's version and one of an older one, as a pod created before the upgrade keeps. The
// WorkloadPolicy's status lists both versions, counts the older one as outdated, and `kubectl get wp`
// shows it in the Outdated column. A version that could not be a tag is refused.
func TestOutdatedSidecars(t *testing.T) {
	cfg, c := pgtest.Start(t)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "podwall-system", nil)
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	web := k.Deployment("shop", "web", "web", "10.1.0.1", "10.1.0.2")

	pg := runPolicygen(t, cfg, c)
	const old = "v0.0.1-3-gabcdef0"
	current, outdated := subscribe(t, pg.client(k.Token(web[0], "podwall"))), subscribe(t, pg.clientWith(k.Token(web[1], "podwall"), pgclient.Options{Version: old}))
	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web"}
	want := []v1.SidecarVersion{{Version: version.Version, Count: 1}, {Version: old, Count: 1}}
	slices.SortFunc(want, func(a, b v1.SidecarVersion) int { return strings.Compare(a.Version, b.Version) })
	testutil.Eventually(t, 30*time.Second, func() error {
		if current.latest() == nil || outdated.latest() == nil {
			return fmt.Errorf("the sidecars hold no policy yet")
		}
		var wp v1.WorkloadPolicy
		if err := c.Get(context.Background(), key, &wp); err != nil {
			return err
		}
		if diff := cmp.Diff(want, wp.Status.SidecarVersions); diff != "" || wp.Status.OutdatedSidecars != 1 || wp.Status.Sidecars != 2 {
			return fmt.Errorf("status: %d sidecars, %d outdated, versions (-want +got):\n%s", wp.Status.Sidecars, wp.Status.OutdatedSidecars, diff)
		}
		return nil
	})
	if got := printed(t, cfg, key, "Outdated"); got != float64(1) {
		t.Errorf("kubectl get wp: Outdated %v, want 1", got)
	}

	req, err := http.NewRequest("GET", "https://"+pg.addr+policy.PolicyPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.Token(web[0], "podwall"))
	req.Header.Set(policy.HeaderVersion, "v1 <script>")
	resp, err := pg.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a poll with version %q: %d, want 400", "v1 <script>", resp.StatusCode)
	}
}

// printed is the cell of column in the table the API server prints for the WorkloadPolicy at key, as
// `kubectl get wp` shows it (the CRD's printer columns).
func printed(t *testing.T, cfg *rest.Config, key client.ObjectKey, column string) any {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	data, err := cs.CoreV1().RESTClient().Get().
		AbsPath("/apis/podwall.io/v1alpha1/namespaces", key.Namespace, "workloadpolicies", key.Name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(data, &table); err != nil {
		t.Fatal(err)
	}
	for i, col := range table.ColumnDefinitions {
		if col.Name == column && len(table.Rows) == 1 {
			return table.Rows[0].Cells[i]
		}
	}
	t.Fatalf("no column %s in %+v", column, table.ColumnDefinitions)
	return nil
}
