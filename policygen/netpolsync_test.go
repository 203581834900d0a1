package policygen_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestNetworkPolicySyncUnderItsRBAC runs the policygen binary with --networkpolicy-sync as its
// ServiceAccount under the manifests' RBAC and the networkpolicy-sync overlay's, so that the flag's
// way from the command line to the syncer, and every permission the sync needs, are exercised: the
// generated policy, once in Protect, gets its NetworkPolicy. Without the overlay's RBAC policygen
// refuses to start and says what to grant.
func TestNetworkPolicySyncUnderItsRBAC(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	bin := pgtest.BuildPolicygen(t)
	pgtest.Namespace(t, c, "podwall-system", nil)
	applyManifest(t, c, "rbac.yaml")
	kubeconfig := pgtest.Kubeconfig(t, cfg, "system:serviceaccount:podwall-system:podwall-policygen")
	env := []string{"KUBECONFIG=" + kubeconfig, "PODWALL_NETWORKPOLICY_SYNC=true"}
	args := []string{"--api-addr=" + pgtest.FreeAddr(t), "--cert-hosts=127.0.0.1", "--metrics-addr=0", "--health-addr=0",
		"--namespace=podwall-system", "--replica-name=replica-0", "--learn-quiet-period=0"}

	refused, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(refused, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err == nil || refused.Err() != nil || !strings.Contains(string(out), "policygen may not get, list, watch, create, update, delete networkpolicies") ||
		!strings.Contains(string(out), "manifests/overlays/networkpolicy-sync/rbac.yaml") {
		t.Fatalf("without the overlay's RBAC policygen ran or failed unclearly (%v):\n%s", err, out)
	}

	applyManifest(t, c, "../overlays/networkpolicy-sync/rbac.yaml")
	pgtest.Namespace(t, c, "shop", map[string]string{"podwall.io/inject": "enabled"})
	k.Deployment("shop", "web", "web", "10.1.0.1")
	pgtest.StartProcess(t, bin, env, args...)

	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web"}
	var wp v1.WorkloadPolicy
	testutil.Await(t, "the generated policy", 60*time.Second, func() error { return c.Get(ctx, key, &wp) })
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, key, &wp); err != nil {
			return err
		}
		wp.Spec.Mode = policy.Protect
		return c.Update(ctx, &wp)
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Await(t, "the policy's NetworkPolicy", 30*time.Second, func() error {
		var np networkingv1.NetworkPolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "podwall-deployment-web"}, &np); err != nil {
			return err
		}
		if !metav1.IsControlledBy(&np, &wp) {
			return errors.New("not controlled by the policy")
		}
		return nil
	})
}
