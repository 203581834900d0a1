package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"podwall.io/podwall/e2e/internal/cluster"
)

const systemNamespace = "podwall-system"

// Deploy installs podwall into the cluster the way a user does, `kubectl apply -k manifests/` (at the
// version the images were built with, as `make release-manifests` would pin it), and then, because this cluster runs no DNS server, points the sidecars at the policy API's Service by
// its cluster IP, which policygen's own certificate then names too. It returns once both Deployments
// are available.
func Deploy(ctx context.Context, c *cluster.Cluster, root string) error {
	manifests, err := pinned(ctx, root)
	if err != nil {
		return err
	}
	defer os.RemoveAll(manifests)
	if out, err := kubectl(ctx, c, "apply", "-k", manifests); err != nil {
		return fmt.Errorf("kubectl apply -k manifests: %w: %s", err, out)
	}
	svc, err := c.Client.CoreV1().Services(systemNamespace).Get(ctx, "podwall-policygen", metav1.GetOptions{})
	if err != nil {
		return err
	}
	ip := svc.Spec.ClusterIP
	url := "https://" + ip + ":8443"
	for _, args := range [][]string{
		{"-n", systemNamespace, "set", "env", "deployment/podwall-policygen", "PODWALL_CERT_HOSTS=" + ip},
		{"-n", systemNamespace, "set", "env", "deployment/podwall-injector", "PODWALL_POLICYGEN_URL=" + url},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-policygen", "--timeout=3m"},
		{"-n", systemNamespace, "rollout", "status", "deployment/podwall-injector", "--timeout=3m"},
	} {
		if out, err := kubectl(ctx, c, args...); err != nil {
			return fmt.Errorf("kubectl %v: %w: %s", args, err, out)
		}
	}
	// The rollout is done once the old injector pod is terminating, but until it has exited it may
	// still answer admissions on a connection the API server keeps to it, injecting pods with the
	// Service's DNS name, which this cluster cannot resolve: wait until only new pods are left.
	return wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(systemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podwall-injector"})
		if err != nil {
			return false, nil // retried until the timeout
		}
		for _, p := range pods.Items {
			if !slices.ContainsFunc(p.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "PODWALL_POLICYGEN_URL" && e.Value == url }) {
				return false, nil
			}
		}
		return len(pods.Items) > 0, nil
	})
}

// pinned writes a kustomization of root's manifests/ whose images are at the version of the tree
// (Version), the one the images were built and the binaries stamped with, and returns its folder,
// which the caller removes.
func pinned(ctx context.Context, root string) (string, error) {
	v, err := Version(ctx, root)
	if err != nil {
		return "", err
	}
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
