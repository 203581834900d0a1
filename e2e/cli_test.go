//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/ui"
)

// TestPluginCommands: `kubectl podwall` status, flows, explain, promote and export, built from
// cmd/kubectl-podwall, against the cluster's podwall. A client learns its flow to a server and is
// put in Protect; a connection to the server's unlisted port is then refused. flows shows that deny,
// merged from every policygen replica with none unreachable (replica to replica TLS and token
// checks work in the cluster); explain says the same connection falls to the default deny and the
// learned one is allowed, without sending either; status lists both workloads; promote refuses the
// server without evidence and moves it with --force; export prints the client's NetworkPolicy.
func TestPluginCommands(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	svc := service(t, ns, "server", 8080)
	allowedURL := fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("client", "connect", "-url", allowedURL)}})
	server, client := podOf(t, ns, "server"), podOf(t, ns, "client")
	if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "viewer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindLister(t, ns, "viewer")
	bin := buildPlugin(t)
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(bin, append([]string{"--kubeconfig", env.Kubeconfig, "-n", ns}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}

	learn(t, ns)
	protect(t, ns, client)
	unlisted := fmt.Sprintf("%s:9090", server.Status.PodIP)
	if line := execConnect(t, ns, client.Name, "client", "http://"+unlisted+"/"); !strings.Contains(line, "connect fail") {
		t.Fatalf("the unlisted connection under Protect: %s, want it refused", line)
	}

	t.Run("flows", func(t *testing.T) {
		testutil.Eventually(t, time.Minute, func() error {
			out, errOut, err := run("flows", "--service-account", "viewer", "--verdict", "deny", "--workload", "Deployment/client", "-o", "json")
			if err != nil {
				return fmt.Errorf("flows: %v\n%s", err, errOut)
			}
			if strings.Contains(errOut, "does not answer") {
				t.Fatalf("a policygen replica is unreachable from another:\n%s", errOut)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var v ui.Event
				if json.Unmarshal([]byte(line), &v) == nil && v.Pod == client.Name && v.PeerAddr == server.Status.PodIP &&
					v.Port == 9090 && v.Verdict == "deny" && v.Replica != "" {
					// Which replica took the report is the Service's choice: when it is not the one
					// forwarded to, the deny came through the merge (TestClusterVerdicts makes sure).
					_, forwarded, _ := strings.Cut(errOut, "forwarding to policygen pod podwall-system/")
					forwarded, _, _ = strings.Cut(forwarded, "\n")
					t.Logf("the deny was reported to replica %s; the command read replica %s", v.Replica, forwarded)
					return nil
				}
			}
			return fmt.Errorf("no deny of %s to %s in:\n%s", client.Name, unlisted, out)
		})
		out, _, err := run("flows", "--service-account", "viewer", "--verdict", "deny")
		if err != nil || !strings.Contains(out, fmt.Sprintf("%s/Deployment/client %s -> ", ns, client.Name)) ||
			!strings.Contains(out, "port 9090/TCP  DENY  rule default") {
			t.Errorf("flows as lines: %v\n%s", err, out)
		}
	})

	t.Run("explain", func(t *testing.T) {
		out, errOut, err := run("explain", "--service-account", "viewer", client.Name, unlisted)
		if err != nil || !strings.Contains(out, "verdict: DENY") || !strings.Contains(out, "rule:    default") || !strings.Contains(out, "mode Protect") {
			t.Errorf("explain %s: %v\n%s%s", unlisted, err, out, errOut)
		}
		allowed := fmt.Sprintf("%s:8080", svc.Spec.ClusterIP)
		out, errOut, err = run("explain", "--service-account", "viewer", client.Name, allowed)
		if err != nil || !strings.Contains(out, "verdict: ALLOW") || !strings.Contains(out, "service:"+ns+"/server") {
			t.Errorf("explain %s: %v\n%s%s", allowed, err, out, errOut)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, _, err := run("status")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Deployment/client   Protect", "Deployment/server   Learn"} {
			if !strings.Contains(strings.Join(strings.Fields(out), "   "), strings.Join(strings.Fields(want), "   ")) {
				t.Errorf("status:\n%s\nhas no row %q", out, want)
			}
		}
	})

	t.Run("promote", func(t *testing.T) {
		p, err := workloadPolicy(t, ns, "deployment-server")
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, err := run("promote", "deployment/server")
		if p.Status.Coverage == nil || !p.Status.Coverage.Complete {
			if err == nil || !strings.Contains(errOut, "not promoting") || !strings.Contains(out, "Learn → Monitor") {
				t.Errorf("promote without complete coverage: %v\n%s%s", err, out, errOut)
			}
			out, errOut, err = run("promote", "deployment/server", "--force")
		}
		if err != nil || !strings.Contains(out, "promoted to Monitor") {
			t.Fatalf("promote: %v\n%s%s", err, out, errOut)
		}
		if p, err := workloadPolicy(t, ns, "deployment-server"); err != nil || p.Spec.Mode != policy.Monitor {
			t.Errorf("server's policy after promote: %v, %+v", err, p)
		}
	})

	t.Run("export", func(t *testing.T) {
		out, _, err := run("export", "deployment/client")
		if err != nil || !strings.Contains(out, "kind: NetworkPolicy") || !strings.Contains(out, "e2e: client") {
			t.Errorf("export: %v\n%s", err, out)
		}
	})
}
