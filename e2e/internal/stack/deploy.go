package stack

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"podwall.io/podwall/e2e/internal/cluster"
)

const systemNamespace = "podwall-system"

// Deploy installs podwall into the cluster the way a user does, `kubectl apply -k manifests/`, and
// then supplies what manifests/ leaves to the cluster: policygen's serving certificate (from the
// cluster's CA, which every pod trusts through kube-root-ca.crt, where a real cluster would use
// cert-manager) and, because this cluster runs no DNS server, the policy API's address as the
// Service's cluster IP. It returns once both Deployments are available.
func Deploy(ctx context.Context, c *cluster.Cluster, root string) error {
	if out, err := kubectl(ctx, c, "apply", "-k", filepath.Join(root, "manifests")); err != nil {
		return fmt.Errorf("kubectl apply -k manifests: %w: %s", err, out)
	}
	svc, err := c.Client.CoreV1().Services(systemNamespace).Get(ctx, "podwall-policygen", metav1.GetOptions{})
	if err != nil {
		return err
	}
	ip := svc.Spec.ClusterIP
	cert, key, err := c.ServingCert("podwall-policygen.podwall-system.svc", "podwall-policygen", ip)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "podwall-policygen-tls", Namespace: systemNamespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}
	if _, err := c.Client.CoreV1().Secrets(systemNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("policygen certificate: %w", err)
	}
	url := "https://" + ip + ":8443"
	for _, args := range [][]string{
		{"-n", systemNamespace, "set", "env", "deployment/podwall-injector",
			"PODWALL_POLICYGEN_URL=" + url, "PODWALL_POLICYGEN_CA_CONFIGMAP=kube-root-ca.crt"},
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

func kubectl(ctx context.Context, c *cluster.Cluster, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	return cmd.CombinedOutput()
}
