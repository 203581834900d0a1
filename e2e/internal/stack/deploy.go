package stack

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"podwall.io/podwall/e2e/internal/cluster"
)

const systemNamespace = "podwall-system"

// Deploy installs podwall into the cluster the way a user does, `kubectl apply -k manifests/`, and
// nothing else: sidecars reach policygen by its Service's name through the cluster DNS, and
// policygen's own certificate names it. It returns once both Deployments are available.
func Deploy(ctx context.Context, c *cluster.Cluster, root string) error {
	for _, args := range [][]string{
		{"apply", "-k", filepath.Join(root, "manifests")},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-policygen", "--timeout=3m"},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-injector", "--timeout=3m"},
	} {
		if out, err := kubectl(ctx, c, args...); err != nil {
			return fmt.Errorf("kubectl %v: %w: %s", args, err, out)
		}
	}
	return nil
}

func kubectl(ctx context.Context, c *cluster.Cluster, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	return cmd.CombinedOutput()
}
