package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"podwall.io/podwall/e2e/internal/cluster"
)

const systemNamespace = "podwall-system"

// Deploy installs podwall into the cluster the way a user does, `kubectl apply -k manifests/` (at the
// version the images were built with, as `make release-manifests` would pin it), and nothing else:
// sidecars reach policygen by its Service's name through the cluster DNS, and policygen's own
// certificate names it. It returns once both Deployments are available.
func Deploy(ctx context.Context, c *cluster.Cluster, root string) error {
	v, err := Version(ctx, root)
	if err != nil {
		return err
	}
	return DeployVersion(ctx, c, root, v)
}

// DeployVersion is Deploy with root's manifests pinned to podwall's images at version v (LoadPodwall
// loads them): applied over an install of another version, it is the README's upgrade.
func DeployVersion(ctx context.Context, c *cluster.Cluster, root, v string) error {
	manifests, err := pinned(root, v)
	if err != nil {
		return err
	}
	defer os.RemoveAll(manifests)
	for _, args := range [][]string{
		{"apply", "-k", manifests},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-policygen", "--timeout=3m"},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-injector", "--timeout=3m"},
	} {
		if out, err := kubectl(ctx, c, args...); err != nil {
			return fmt.Errorf("kubectl %v: %w: %s", args, err, out)
		}
	}
	return nil
}

// pinned writes a kustomization of root's manifests/ whose images are at version v, the one the
// images were built and the binaries stamped with, and returns its folder, which the caller removes.
func pinned(root, v string) (string, error) {
	dir, err := os.MkdirTemp("", "podwall-manifests-")
	if err != nil {
		return "", err
	}
	// kustomize takes a base only by a relative path.
	base, err := filepath.Rel(dir, filepath.Join(root, "manifests"))
	if err != nil {
		return "", err
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %q
images:
- name: podwall/injector
  newTag: %q
- name: podwall/policygen
  newTag: %q
`, base, v, v)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

func kubectl(ctx context.Context, c *cluster.Cluster, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	return cmd.CombinedOutput()
}
