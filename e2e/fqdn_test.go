//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/testutil"
)

// TestFQDNEgress is DNS-aware egress on the real cluster: a client in Protect whose only rule for its
// server is the server's DNS name, served by the cluster's DNS (CoreDNS, a headless Service, whose
// answers are the pods' own addresses, so they change when the pod does). The sidecar reads the
// cluster DNS's answers on their way to the app: the named server is reached on every attempt, each
// allow line saying the name; another port of the same name and a name no rule allows are refused,
// each deny line saying the name; when the server's pod is replaced, its new address is followed.
// Nothing the policy refuses reaches a server.
func TestFQDNEgress(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "db", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("db", "serve", "-addr", ":8080,:9090")}})
	deployment(t, ns, "web", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("web", "serve")}})
	headless(t, ns, "db", 8080)
	headless(t, ns, "web", 8080)
	// The trailing dot makes the names absolute, so the resolver asks for them alone rather than
	// walking the pod's search domains first.
	dbName, webName := "db."+ns+".svc.cluster.local", "web."+ns+".svc.cluster.local"
	// The servers are ready before the client asks for their names: a query answered "no such host"
	// before the Service has an address is cached by the cluster DNS for a while.
	db, web := podOf(t, ns, "db"), podOf(t, ns, "web")
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-interval", "500ms", "-url", "http://"+dbName+".:8080/")}})
	client := podOf(t, ns, "client")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"the name resolves (in Learn)", func(t *testing.T) {
			// Should the client still have asked before the Service's EndpointSlice listed db's pod,
			// the cluster DNS caches the "no such host" it answered then for a while: Protect comes
			// once the name resolves, so that what follows judges the firewall, not the DNS's cache.
			testutil.Await(t, "a connection by name in Learn", 2*time.Minute, func() error {
				if len(logLines(t, ns, client.Name, "client", "connect ok")) == 0 {
					return fmt.Errorf("none yet")
				}
				return nil
			})
		}},
		{"protect with a rule by name", func(t *testing.T) {
			nameRule(t, ns, "deployment-client", "db-by-name", dbName, 8080)
			waitLog(t, ns, client.Name, "podwall", time.Minute, "policy applied", `"mode":"Protect"`)
		}},
		{"the name is reached on every attempt, and the allow line says it", func(t *testing.T) {
			since := time.Now()
			testutil.Await(t, "five connections by name under Protect", time.Minute, func() error {
				if ok := len(linesSince(t, ns, client.Name, "client", since, "connect ok")); ok < 5 {
					return fmt.Errorf("%d so far", ok)
				}
				return nil
			})
			if fails := linesSince(t, ns, client.Name, "client", since, "connect fail"); len(fails) > 0 {
				t.Errorf("connections by an allowed name failed:\n%s", strings.Join(fails, "\n"))
			}
			awaitVerdict(t, ns, client.Name, "an allow line by rule db-by-name naming "+dbName, func(l verdict.Line) bool {
				return l.Verdict == policy.Allow && l.Mode == policy.Protect && l.Rule == "egress/db-by-name" &&
					l.DstName == dbName && isPodAddr(db, l.Dst.Addr()) && l.Dst.Port() == 8080
			})
		}},
		{"another port of the name is refused, and the deny line says the name", func(t *testing.T) {
			refusedByName(t, ns, client, dbName, 9090)
		}},
		{"a name no rule allows is refused, and the deny line says it", func(t *testing.T) {
			refusedByName(t, ns, client, webName, 8080)
		}},
		{"a new address for the name is followed", func(t *testing.T) {
			if err := env.Client.CoreV1().Pods(ns).Delete(context.Background(), db.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			moved := podOf(t, ns, "db", db.Name)
			// The cluster DNS may answer with the old address for as long as it caches it (30 s
			// here) before it gives the new one.
			testutil.Await(t, "an allow line for the new pod's address, naming "+dbName, 2*time.Minute, func() error {
				for _, l := range verdictLines(t, ns, client.Name, time.Time{}) {
					if l.Verdict == policy.Allow && l.Rule == "egress/db-by-name" && l.DstName == dbName && isPodAddr(moved, l.Dst.Addr()) {
						return nil
					}
				}
				return fmt.Errorf("no such verdict line")
			})
			testutil.Await(t, "the new db pod serves the client", time.Minute, func() error {
				if n := len(logLines(t, ns, moved.Name, "db", ":8080 path=")); n == 0 {
					return fmt.Errorf("no request yet")
				}
				return nil
			})
			db = moved
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
	if leaks := logLines(t, ns, web.Name, "web", "request from="); len(leaks) > 0 {
		t.Errorf("the server no rule names was reached:\n%s", strings.Join(leaks, "\n"))
	}
	if leaks := logLines(t, ns, db.Name, "db", ":9090 path="); len(leaks) > 0 {
		t.Errorf("the named server's unlisted port was reached:\n%s", strings.Join(leaks, "\n"))
	}
}

// refusedByName connects from the client to name:port, which its policy does not allow, and checks
// that the connection is refused and that the deny line names the name.
func refusedByName(t *testing.T, ns string, client *corev1.Pod, name string, port uint16) {
	t.Helper()
	line := execConnect(t, ns, client.Name, "client", fmt.Sprintf("http://%s.:%d/", name, port))
	if !strings.Contains(line, "connect fail") || !strings.Contains(line, "connection refused") {
		t.Fatalf("%s:%d: %s, want a refusal", name, port, line)
	}
	awaitVerdict(t, ns, client.Name, fmt.Sprintf("a deny line naming %s, port %d", name, port), func(l verdict.Line) bool {
		return l.Verdict == policy.Deny && l.Direction == policy.Egress && l.DstName == name && l.Dst.Port() == port
	})
}

// nameRule switches the workload's policy to Protect with, for egress, its manifest rules (the
// cluster DNS among them) and one user rule allowing name on port: what a user writes with
// `kubectl edit`, here through `kubectl replace`.
func nameRule(t *testing.T, ns, policyName, rule, name string, port int32) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "policy.json")
	// The learner may update the policy in between: a conflict is retried from a fresh read.
	testutil.Await(t, "the client's policy in Protect with rule "+rule, time.Minute, func() error {
		wp, err := workloadPolicy(t, ns, policyName)
		if err != nil {
			return err
		}
		egress := []v1alpha1.Rule{{Name: rule, Origin: policy.OriginUser,
			Peers: []v1alpha1.Peer{{FQDN: name}}, Ports: []v1alpha1.Port{{Protocol: policy.TCP, Port: port}}}}
		dns := false
		for _, r := range wp.Spec.Egress {
			if r.Origin == policy.OriginManifest {
				egress = append(egress, r)
				dns = dns || r.Name == "m-dns"
			}
		}
		if !dns {
			return fmt.Errorf("no manifest rule m-dns (the cluster DNS) yet")
		}
		wp.Spec.Egress, wp.Spec.Mode = egress, policy.Protect
		b, err := json.Marshal(wp)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, b, 0o600); err != nil {
			return err
		}
		if out, err := kubectlOut("replace", "-f", file); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// isPodAddr says whether a is one of the pod's addresses.
func isPodAddr(pod *corev1.Pod, a netip.Addr) bool {
	for _, ip := range podIPs(pod) {
		if p, err := netip.ParseAddr(ip); err == nil && p == a.Unmap() {
			return true
		}
	}
	return false
}
