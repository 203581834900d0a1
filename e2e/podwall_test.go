//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/e2e/internal/cluster"
	"podwall.io/podwall/internal/testutil"
)

// TestPodwallStory is the product's main path on a real cluster, step by step (each step needs the
// previous): opt a namespace in, run a client and a server, learn, protect, and check that nothing
// unlisted ever gets through, not even before the firewall is up or while its sidecar is dead.
func TestPodwallStory(t *testing.T) {
	requirePodwall(t)
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	// The server serves :8080 (its Service) and :9090 (listed nowhere). It stays in Learn, which
	// admits everything, so a request it logs on :9090 is one that the client's sidecar let out.
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	svc := service(t, ns, "server", 8080)
	// The Service selects e2e=server; the Deployment's pods carry it.
	allowedURL := fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("client", "connect", "-url", allowedURL)}})
	server := podOf(t, ns, "server")
	unlistedURL := fmt.Sprintf("http://%s:9090/", server.Status.PodIP)
	client := podOf(t, ns, "client")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"sidecar first", func(t *testing.T) { sidecarFirst(t, client) }},
		{"sidecar of the injector's version, none outdated", func(t *testing.T) { sidecarVersion(t, ns, client) }},
		{"learn", func(t *testing.T) { learn(t, ns) }},
		{"learn lets the app ping", func(t *testing.T) { pingFrom(t, ns, client, server, "ping reply") }},
		{"protect keeps the allowed flow", func(t *testing.T) { protect(t, ns, client) }},
		{"protect lets the app resolve a Service's name and says so", func(t *testing.T) { resolveByName(t, ns, client) }},
		{"protect refuses an unlisted ping and says so", func(t *testing.T) {
			pingFrom(t, ns, client, server, "ping timeout")
		}},
		{"unlisted connection refused fast and logged", func(t *testing.T) {
			unlistedRefused(t, ns, client, server, unlistedURL)
		}},
		{"a forged mark gets nothing past the firewall", func(t *testing.T) {
			forgedMarks(t, ns, client, server)
		}},
		{"no packet before the ruleset", func(t *testing.T) {
			client = firstPacket(t, ns, client, unlistedURL)
		}},
		{"killing the sidecar lets nothing unlisted through", func(t *testing.T) {
			killSidecar(t, ns, client)
		}},
		{"a revoked rule cuts its open connection", func(t *testing.T) {
			revokeOpen(t, ns, client, net.JoinHostPort(svc.Spec.ClusterIP, "8080"))
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
	if leaks := logLines(t, ns, podOf(t, ns, "server").Name, "server", ":9090 path="); len(leaks) > 0 {
		t.Errorf("the server accepted unlisted connections:\n%s", strings.Join(leaks, "\n"))
	}
}

// sidecarFirst: the injected podwall container is the pod's first container, a native sidecar that
// must be ready before any other container starts.
func sidecarFirst(t *testing.T, pod *corev1.Pod) {
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != "podwall" {
		t.Fatalf("first init container is not podwall: %+v", pod.Spec.InitContainers)
	}
	sc := pod.Spec.InitContainers[0]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways || sc.StartupProbe == nil {
		t.Errorf("podwall is not a native sidecar with a startup probe: restartPolicy %v, startupProbe %v", sc.RestartPolicy, sc.StartupProbe)
	}
	sidecarStarted := pod.Status.InitContainerStatuses[0].State.Running.StartedAt.Time
	for _, st := range pod.Status.ContainerStatuses {
		if st.State.Running == nil || st.State.Running.StartedAt.Time.Before(sidecarStarted) {
			t.Errorf("container %s started before the sidecar (%v)", st.Name, st.State)
		}
	}
}

// sidecarVersion: the injector injected the sidecar image of its own version (the version this tree's
// images were built and tagged with), and the client's policy lists that version alone, for every
// sidecar it counts (a sidecar whose requests reached both policygen replicas lately is counted by
// each), none outdated.
func sidecarVersion(t *testing.T, ns string, pod *corev1.Pod) {
	ref := needImage(t, "podwall-sidecar")
	if img := pod.Spec.InitContainers[0].Image; img != ref {
		t.Errorf("injected sidecar image %s, want %s", img, ref)
	}
	v := ref[strings.LastIndex(ref, ":")+1:]
	testutil.Await(t, "client policy lists its sidecar's version", time.Minute, func() error {
		p, err := workloadPolicy(t, ns, "deployment-client")
		if err != nil {
			return err
		}
		want := []v1alpha1.SidecarVersion{{Version: v, Count: max(p.Status.Sidecars, 1)}}
		if !slices.Equal(p.Status.SidecarVersions, want) || p.Status.OutdatedSidecars != 0 {
			return fmt.Errorf("sidecar versions %+v, %d outdated; want %+v, none outdated", p.Status.SidecarVersions, p.Status.OutdatedSidecars, want)
		}
		return nil
	})
}

// learn: in Learn mode the client's flow to the server becomes a learned rule, next to the rules
// derived from the manifests.
func learn(t *testing.T, ns string) {
	testutil.Await(t, "client policy learns the flow to the server", 2*time.Minute, func() error {
		p, err := workloadPolicy(t, ns, "deployment-client")
		if err != nil {
			return err
		}
		if p.Spec.Mode != policy.Learn {
			return fmt.Errorf("mode %s, want Learn", p.Spec.Mode)
		}
		origins := map[policy.Origin]bool{}
		learned := false
		for _, r := range p.Spec.Egress {
			origins[r.Origin] = true
			for _, peer := range r.Peers {
				if r.Origin == policy.OriginLearned && peer.Service != nil && peer.Service.Name == "server" && hasPort(r, 8080) {
					learned = true
				}
			}
		}
		if !learned || !origins[policy.OriginManifest] {
			return fmt.Errorf("egress %+v: want a learned rule to service server:8080 and a manifest rule", p.Spec.Egress)
		}
		return nil
	})
}

func hasPort(r v1alpha1.Rule, port int32) bool {
	for _, p := range r.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

// protect switches the client to Protect and checks that its allowed flow goes on working.
func protect(t *testing.T, ns string, client *corev1.Pod) {
	setMode(t, ns, "deployment-client", policy.Protect)
	waitLog(t, ns, client.Name, "podwall", time.Minute, "policy applied", `"mode":"Protect"`)
	since := time.Now()
	testutil.Await(t, "three allowed connections under Protect", time.Minute, func() error {
		ok := len(linesSince(t, ns, client.Name, "client", since, "connect ok"))
		if ok < 3 {
			return fmt.Errorf("%d connections so far", ok)
		}
		return nil
	})
	if fails := linesSince(t, ns, client.Name, "client", since, "connect fail"); len(fails) > 0 {
		t.Errorf("the allowed flow failed under Protect:\n%s", strings.Join(fails, "\n"))
	}
}

// linesSince is logLines limited to lines logged after since.
func linesSince(t *testing.T, ns, pod, container string, since time.Time, parts ...string) []string {
	t.Helper()
	out := kubectl(t, "-n", ns, "logs", pod, "-c", container, "--since-time", since.UTC().Format(time.RFC3339))
	var found []string
	for _, line := range strings.Split(out, "\n") {
		if containsAll(line, parts) {
			found = append(found, line)
		}
	}
	return found
}

// resolveByName: the sidecar, which holds its policy, got it from policygen's Service name (the
// injector's default URL, which the install leaves as it is). Under Protect the app reaches the
// server by its Service's name too: the lookup goes to the cluster DNS (CoreDNS behind
// kube-system/kube-dns) through the client's firewall, which lets it pass by the policy's manifest
// rule for the cluster DNS and logs that allow.
func resolveByName(t *testing.T, ns string, client *corev1.Pod) {
	const policygenURL = "https://podwall-policygen.podwall-system.svc:8443"
	if !slices.Contains(client.Spec.InitContainers[0].Env, corev1.EnvVar{Name: sidecar.KeyPolicyGenURL.Env(), Value: policygenURL}) {
		t.Errorf("the sidecar's env %+v, want %s=%s", client.Spec.InitContainers[0].Env, sidecar.KeyPolicyGenURL.Env(), policygenURL)
	}
	url := fmt.Sprintf("http://server.%s.svc:8080/", ns)
	if line := execConnect(t, ns, client.Name, "client", url); !strings.Contains(line, "connect ok") {
		t.Fatalf("connect by name: %s", line)
	}
	dns := netip.AddrPortFrom(netip.MustParseAddr(cluster.DNSIP), 53)
	testutil.Await(t, "an allow line for the cluster DNS", 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, client.Name, time.Time{}) {
			if l.Verdict == policy.Allow && l.Direction == policy.Egress && l.Proto == syscall.IPPROTO_UDP &&
				l.Dst == dns && l.Rule == "egress/m-dns" && l.Mode == policy.Protect {
				return nil
			}
		}
		return fmt.Errorf("no egress allow to %s by rule egress/m-dns", dns)
	})
}

var msField = regexp.MustCompile(`ms=(\d+)`)

// unlistedRefused: a new connection that no rule lists is refused at once (a reset, not a two-minute
// SYN timeout), and the sidecar's log says so.
func unlistedRefused(t *testing.T, ns string, client, server *corev1.Pod, url string) {
	line := execConnect(t, ns, client.Name, "client", url)
	m := msField.FindStringSubmatch(line)
	if !strings.Contains(line, "connect fail") || !strings.Contains(line, "connection refused") || m == nil {
		t.Fatalf("unlisted connection: %s, want a refusal", line)
	}
	if ms, _ := strconv.Atoi(m[1]); ms > 1000 {
		t.Errorf("refusal took %d ms", ms)
	}
	unlisted := netip.AddrPortFrom(netip.MustParseAddr(server.Status.PodIP), 9090)
	testutil.Await(t, "a deny line for "+unlisted.String(), 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, client.Name, time.Time{}) {
			if l.Verdict == policy.Deny && l.Direction == policy.Egress && l.Dst == unlisted && l.Mode == policy.Protect {
				return nil
			}
		}
		return errors.New("no such verdict line")
	})
}

// forgedMarks: a compromised app cannot get past its pod's firewall with SO_MARK or packet sockets. The
// injected app containers hold no CAP_NET_RAW, so the kernel refuses both outright. A pod that keeps
// NET_RAW (the opt-out annotation) can set any mark, and its firewall still judges and refuses every
// such connection: the first with a deny line, the repeats of that key from the deny memo. The
// server, in Learn, logs any request that arrives (the story's last check).
func forgedMarks(t *testing.T, ns string, client, server *corev1.Pod) {
	target := netip.AddrPortFrom(netip.MustParseAddr(server.Status.PodIP), 9090)
	attack := func(pod, container string) string {
		return kubectl(t, "-n", ns, "exec", pod, "-c", container, "--", "/workload", "attack", "-addr", target.String())
	}
	if out := attack(client.Name, "client"); strings.Count(out, "operation not permitted") != 6 {
		t.Errorf("an injected app container set a mark or opened a packet socket:\n%s", out)
	}

	ctx := context.Background()
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "rawclient", Labels: map[string]string{"e2e": "rawclient"},
			Annotations: map[string]string{"podwall.io/allow-net-raw": "true"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{workloadContainer("app", "pause")},
			TerminationGracePeriodSeconds: ptr.To[int64](1)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runningPod(t, ns, "rawclient")
	testutil.Await(t, "the rawclient pod's policy", time.Minute, func() error {
		_, err := workloadPolicy(t, ns, "pod-rawclient")
		return err
	})
	setMode(t, ns, "pod-rawclient", policy.Protect)
	waitLog(t, ns, "rawclient", "podwall", time.Minute, "policy applied", `"mode":"Protect"`)
	since := time.Now()
	out := attack("rawclient", "app")
	if strings.Contains(out, "connected") || strings.Count(out, "connection refused") != 5 {
		t.Errorf("forged marks from a container holding NET_RAW:\n%s", out)
	}
	testutil.Await(t, "a deny line for the forged connections", 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, "rawclient", since.Add(-time.Second)) {
			if l.Verdict == policy.Deny && l.Dst == target {
				return nil
			}
		}
		return fmt.Errorf("no deny line for %s", target)
	})
}

// firstPacket rolls out a new client pod whose extra container connects to the unlisted port at its
// first instruction and then every 200 ms: had any packet left the pod before the sidecar's ruleset
// was in place, the server would log it. The new pod's allowed flow works from its first attempt.
func firstPacket(t *testing.T, ns string, old *corev1.Pod, unlistedURL string) *corev1.Pod {
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"prober","image":%q,"imagePullPolicy":"IfNotPresent","args":["connect","-url",%q,"-interval","200ms","-timeout","2s"]}]}}}}`,
		old.Spec.Containers[0].Image, unlistedURL)
	kubectl(t, "-n", ns, "patch", "deployment", "client", "--type", "strategic", "-p", patch)
	pod := podOf(t, ns, "client", old.Name)
	first := waitLog(t, ns, pod.Name, "prober", time.Minute, "connect")
	if !strings.Contains(first, "connect fail") {
		t.Errorf("the prober's first connection was not refused: %s", first)
	}
	if first := waitLog(t, ns, pod.Name, "client", time.Minute, "connect"); !strings.Contains(first, "connect ok") {
		t.Errorf("the new pod's first allowed connection failed: %s", first)
	}
	return pod
}

// killSidecar kills the podwall container of a protected pod while its prober keeps trying the
// unlisted port: nothing gets through while the sidecar is dead or restarting, and once it is back it
// denies and logs again.
func killSidecar(t *testing.T, ns string, pod *corev1.Pod) {
	killContainer(t, containerID(pod, "podwall"))
	killed := time.Now()
	testutil.Await(t, "the sidecar restarts", 2*time.Minute, func() error {
		p, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := p.Status.InitContainerStatuses[0]
		if st.RestartCount < 1 || !st.Ready {
			return fmt.Errorf("restarts %d, ready %v", st.RestartCount, st.Ready)
		}
		return nil
	})
	testutil.Await(t, "the restarted sidecar denies the prober again", time.Minute, func() error {
		for _, l := range verdictLines(t, ns, pod.Name, killed) {
			if l.Verdict == policy.Deny {
				return nil
			}
		}
		return errors.New("no deny line since the kill")
	})
	if oks := linesSince(t, ns, pod.Name, "prober", killed, "connect ok"); len(oks) > 0 {
		t.Errorf("unlisted connections succeeded around the sidecar's death:\n%s", strings.Join(oks, "\n"))
	}
}

// pingFrom pings the server from the client's app container, which holds no CAP_NET_RAW: the ICMP
// datagram socket the injected net.ipv4.ping_group_range opens. want is the workload's answer: a reply
// in Learn; a timeout in Protect (no rule names ICMP), with the deny line saying ICMP.
func pingFrom(t *testing.T, ns string, client, server *corev1.Pod, want string) {
	since := time.Now()
	out := kubectl(t, "-n", ns, "exec", client.Name, "-c", "client", "--", "/workload", "ping", "-addr", server.Status.PodIP)
	if !strings.Contains(out, want) {
		t.Fatalf("ping %s: %s, want %q", server.Status.PodIP, strings.TrimSpace(out), want)
	}
	verdict := policy.Allow
	if want == "ping timeout" {
		verdict = policy.Deny
	}
	testutil.Await(t, "an ICMP "+verdict.String()+" line", 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, client.Name, since.Add(-time.Second)) {
			if l.Verdict == verdict && l.Proto.Name() == "ICMP" && l.Dst.Addr().String() == server.Status.PodIP {
				return nil
			}
		}
		return errors.New("no such verdict line")
	})
}

// revokeOpen holds a connection from the client to addr (the server's Service, allowed by the learned
// rule), then removes the client's learned rules: the open connection stops at once, with a revoked
// line, instead of living on under a policy that no longer allows it.
func revokeOpen(t *testing.T, ns string, client *corev1.Pod, addr string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testutil.Buffer
	holder := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", env.Kubeconfig, "-n", ns, "exec", client.Name,
		"-c", "client", "--", "/workload", "hold", "-addr", addr)
	holder.Stdout, holder.Stderr = &out, &out
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	testutil.Await(t, "the held connection answers", time.Minute, func() error {
		if !strings.Contains(out.String(), "hold ok 3") {
			return fmt.Errorf("holder: %q", out.String())
		}
		return nil
	})

	p, err := workloadPolicy(t, ns, "deployment-client")
	if err != nil {
		t.Fatal(err)
	}
	var kept []v1alpha1.Rule
	for _, r := range p.Spec.Egress {
		if r.Origin != policy.OriginLearned {
			kept = append(kept, r)
		}
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"egress": kept}})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	kubectl(t, "-n", ns, "patch", "workloadpolicy", "deployment-client", "--type", "merge", "-p", string(patch))
	testutil.Await(t, "the held connection is cut", 30*time.Second, func() error {
		if !strings.Contains(out.String(), "hold broken") {
			return errors.New("still answering")
		}
		return nil
	})
	testutil.Await(t, "a revoked line for the held connection", 30*time.Second, func() error {
		for _, l := range verdictLines(t, ns, client.Name, since.Add(-time.Second)) {
			if l.Verdict == policy.Revoked && l.Dst.Port() == 8080 {
				return nil
			}
		}
		return errors.New("no revoked line")
	})
}
