//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
)

// TestIPv6Story is the story's main path over IPv6, on the dual-stack cluster: an injected client
// whose only traffic goes to the server Service's IPv6 cluster IP. Its sidecar is given both of the
// pod's addresses and judges IPv6 like IPv4: the flow is learned, with a verdict line naming the IPv6
// peer on both ends; the learned rule reaches the ruleset's IPv6 sets; under Protect an allowed IPv6
// connection to the server pod's IPv6 address passes and an unlisted one is refused, each with its
// line, and nothing unlisted reaches the server.
func TestIPv6Story(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	// Every allow is logged (the workload's own setting, which may log more than the platform's
	// "first"), so that the allow under Protect has its line although Learn logged that peer before.
	kubectl(t, "-n", ns, "create", "configmap", "podwall-config", "--from-literal=config.yaml=log-allows: all\n")
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	svc := service(t, ns, "server", 8080)
	svc6 := netip.AddrPortFrom(ipv6Of(t, svc.Spec.ClusterIPs), 8080)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("client", "connect", "-url", "http://"+svc6.String()+"/")}})
	server, client := podOf(t, ns, "server"), podOf(t, ns, "client")
	server6, client6 := ipv6Of(t, podIPs(server)), ipv6Of(t, podIPs(client))
	allowed6 := netip.AddrPortFrom(server6, 8080)
	unlisted6 := netip.AddrPortFrom(server6, 9090)

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"the sidecar is given both addresses", func(t *testing.T) {
			got := sidecarEnv(t, client, "PODWALL_POD_IPS")
			if want := strings.Join(podIPs(client), ","); got != want || len(client.Status.PodIPs) != 2 {
				t.Errorf("PODWALL_POD_IPS=%q, want both of the pod's addresses %q", got, want)
			}
		}},
		{"learn an IPv6 flow with its verdict lines", func(t *testing.T) {
			awaitVerdict(t, ns, client.Name, "the client's egress to "+svc6.String(), func(l verdict.Line) bool {
				return l.Verdict == policy.Allow && l.Direction == policy.Egress && l.Mode == policy.Learn && l.Dst == svc6
			})
			awaitVerdict(t, ns, server.Name, "the server's ingress from "+client6.String(), func(l verdict.Line) bool {
				return l.Verdict == policy.Allow && l.Direction == policy.Ingress && l.Src.Addr() == client6 && l.Dst == allowed6
			})
			learn(t, ns)
		}},
		{"the ruleset holds the learned rule in both families", func(t *testing.T) {
			ipv4 := netip.MustParseAddr(svc.Spec.ClusterIP)
			testutil.Await(t, "the learned peers in the client's allow sets", 30*time.Second, func() error {
				table := podNft(t, client, "list", "table", "inet", ruleset.TableName)
				for _, want := range []string{ipv4.String() + " . tcp . 8080", svc6.Addr().String() + " . tcp . 8080", server6.String() + " . tcp . 8080"} {
					if !strings.Contains(table, want) {
						return fmt.Errorf("no element %q in table %s:\n%s", want, ruleset.TableName, table)
					}
				}
				return nil
			})
		}},
		{"protect allows the learned IPv6 peer", func(t *testing.T) {
			protect(t, ns, client)
			since := time.Now()
			if line := execConnect(t, ns, client.Name, "client", "http://"+allowed6.String()+"/"); !strings.Contains(line, "connect ok") {
				t.Fatalf("client to the server pod's %s under Protect: %s", allowed6, line)
			}
			awaitVerdict(t, ns, client.Name, "an allow line for "+allowed6.String(), func(l verdict.Line) bool {
				return l.Verdict == policy.Allow && l.Mode == policy.Protect && l.Dst == allowed6 && !l.Time.Before(since.Add(-time.Second))
			})
		}},
		{"protect refuses an unlisted IPv6 peer", func(t *testing.T) {
			line := execConnect(t, ns, client.Name, "client", "http://"+unlisted6.String()+"/")
			if !strings.Contains(line, "connect fail") || !strings.Contains(line, "connection refused") {
				t.Fatalf("unlisted %s: %s, want a refusal", unlisted6, line)
			}
			awaitVerdict(t, ns, client.Name, "a deny line for "+unlisted6.String(), func(l verdict.Line) bool {
				return l.Verdict == policy.Deny && l.Direction == policy.Egress && l.Mode == policy.Protect && l.Dst == unlisted6
			})
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
	if leaks := logLines(t, ns, server.Name, "server", ":9090 path="); len(leaks) > 0 {
		t.Errorf("the server accepted unlisted connections:\n%s", strings.Join(leaks, "\n"))
	}
}

// awaitVerdict waits until the pod's sidecar has logged a verdict line that match accepts.
func awaitVerdict(t *testing.T, ns, pod, what string, match func(verdict.Line) bool) {
	t.Helper()
	testutil.Await(t, what, 30*time.Second, func() error {
		if slices.ContainsFunc(verdictLines(t, ns, pod, time.Time{}), match) {
			return nil
		}
		return errors.New("no such verdict line")
	})
}

// sidecarPID is the host's process id of the pod's podwall container.
func sidecarPID(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	id := containerID(pod, "podwall")
	out, err := exec.Command("ctr", "--address", env.ContainerdSocket, "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			if pid, err := strconv.Atoi(f[1]); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no task %s (the podwall container of %s):\n%s", id, pod.Name, out)
	return 0
}

// sidecarEnv is the value of one environment variable of the pod's running podwall container, as the
// kubelet resolved it.
func sidecarEnv(t *testing.T, pod *corev1.Pod, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", sidecarPID(t, pod)))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(name+"=")); ok {
			return string(v)
		}
	}
	t.Fatalf("the podwall container of %s has no %s", pod.Name, name)
	return ""
}

// podNft runs nft with args in the pod's network namespace, as root on the host.
func podNft(t *testing.T, pod *corev1.Pod, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(sidecarPID(t, pod)), "-n", "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s in pod %s: %v: %s", strings.Join(args, " "), pod.Name, err, out)
	}
	return string(out)
}
