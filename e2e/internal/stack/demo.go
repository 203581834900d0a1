package stack

import (
	"bytes"
	"context"
	_ "embed" // the demo workload's manifest
	"fmt"
	"os/exec"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/e2e/internal/cluster"
)

//go:embed demo.yaml
var demoYAML []byte

// Setup deploys podwall and the demo workload onto a running cluster, as asked.
func Setup(ctx context.Context, c *cluster.Cluster, root string, podwall, demo bool) error {
	if !podwall {
		return nil
	}
	if err := Deploy(ctx, c, root); err != nil {
		return err
	}
	if demo {
		return Demo(ctx, c)
	}
	return nil
}

// Demo deploys make run's demo workload (namespace "demo": a client calling a server) and waits until
// both run with their sidecars.
func Demo(ctx context.Context, c *cluster.Cluster) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "kubectl"), "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(demoYAML)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apply the demo workload: %w: %s", err, out)
	}
	for _, d := range []string{"deployment/server", "deployment/client"} {
		if out, err := kubectl(ctx, c, "-n", "demo", "rollout", "status", d, "--timeout=3m"); err != nil {
			return fmt.Errorf("demo %s: %w: %s", d, err, out)
		}
	}
	return nil
}

// Usage is what to type next, printed once the cluster is up.
func Usage(ctx context.Context, c *cluster.Cluster, podwall, demo bool) string {
	s := fmt.Sprintf(`local cluster up: node %s, API server %s; component logs in %s/logs
  export KUBECONFIG=%s
  alias kubectl=%s
  kubectl get pods -A
`, c.HostIP, c.APIServerURL, c.Dir(), c.Kubeconfig, filepath.Join(c.BinDir(), "kubectl"))
	if podwall {
		s += "podwall runs in namespace podwall-system (kubectl apply -k manifests/).\n"
		if svc, err := c.Client.CoreV1().Services(systemNamespace).Get(ctx, "podwall-policygen", metav1.GetOptions{}); err == nil {
			const host = "podwall-policygen.podwall-system.svc"
			s += fmt.Sprintf(`web UI: https://%[1]s:8443/ui/ (the name is the cluster DNS's, %[3]s; its certificate is
  from policygen's own CA: kubectl -n podwall-system get configmap podwall-policygen-ca -o jsonpath='{.data.ca\.crt}')
  e.g. curl --resolve %[1]s:8443:%[2]s --cacert <that CA> https://%[1]s:8443/ui/
`, host, svc.Spec.ClusterIP, cluster.DNSIP)
		}
	}
	if demo {
		server := "<server's cluster IP>"
		if svc, err := c.Client.CoreV1().Services("demo").Get(ctx, "server", metav1.GetOptions{}); err == nil {
			server = svc.Spec.ClusterIP
		}
		s += fmt.Sprintf(`demo workload in namespace demo (opted in, Learn mode): a client calls the server every second.
  make build && bin/kubectl-podwall ui -n demo --service-account ui-user
      # the web UI in your browser, signed in as ui-user (reads policies, changes modes)
  kubectl -n demo create token ui-user                   # or a token to paste into the web UI
  kubectl -n demo logs deploy/client -c podwall -f       # the client's verdict lines
  kubectl -n demo get workloadpolicies -o yaml            # manifest and learned rules
  kubectl -n demo patch workloadpolicy deployment-client --type merge -p '{"spec":{"mode":"Protect"}}'
  kubectl -n demo exec deploy/client -c client -- /workload connect -count 1 -url http://%s:9090/
      # never used in Learn, so refused at once under Protect, with a deny line in the verdict log
`, server)
	}
	return s + "Ctrl-C tears it all down.\n"
}
