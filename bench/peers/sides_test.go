//go:build bench

package peers

import (
	"bytes"
	"context"
	_ "embed" // the sides' manifest
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"podwall.io/podwall/e2e/harness"
	"podwall.io/podwall/internal/testutil"
)

//go:embed sides.yaml
var sidesYAML string

// The server's ports every side allows the client (sides.yaml): repeat-key connections go to
// repeatPort, iperf3 to iperfPort, and fresh-key connections each to a port of firstFresh..lastFresh
// not used before, which the server's namespace redirects to repeatPort (nat, so that the firewalls
// judge the port the client asked for: podwall and the static ruleset by the connection's original
// port, KNP in the host's namespace before it).
const (
	repeatPort = 7000
	iperfPort  = 5201
	firstFresh = 10000
	lastFresh  = 59999
)

// dialTimeout is one connection attempt's limit: KNP drops what it refuses, so a refused attempt
// fails only after it.
const dialTimeout = 2 * time.Second

// Side names, in the order the rounds visit them: the baseline first.
const (
	sideNone    = "none"
	sideKNP     = "knp"
	sidePodwall = "podwall"
	sideLogAll  = "logall"
	sideStatic  = "static"
)

// side is one server and what guards it.
type side struct {
	name      string
	namespace string
	server    *corev1.Pod
	addr      string // the server pod's IPv4 address
	netns     netns
	// firewall is the container whose CPU is the firewall's (KNP's agent, the server's sidecar);
	// nil where the firewall is the kernel alone.
	firewall *container
	// nextPort is the next fresh port not used yet.
	nextPort int
}

// takePorts reserves n fresh ports and returns the first.
func (s *side) takePorts(t testing.TB, n int) int {
	t.Helper()
	first := s.nextPort
	if s.nextPort += n; s.nextPort > lastFresh+1 {
		t.Fatalf("%s: the fresh ports %d-%d are used up", s.name, firstFresh, lastFresh)
	}
	return first
}

// up starts the cluster with podwall's images; it is torn down when the test ends, or when the run is
// interrupted (KNP's table, which lives in the host's ruleset, first).
func up(t *testing.T, root string) *harness.Cluster {
	t.Helper()
	c, missing, err := harness.Up(context.Background(), root)
	if err != nil {
		t.Fatalf("start the cluster: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; !ok {
			return
		}
		fmt.Fprintln(os.Stderr, "peers: interrupted; tearing the cluster down")
		exec.Command("nft", "delete", "table", "inet", knpTable).Run()
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "peers: teardown:", err)
		}
		os.Exit(2)
	}()
	t.Cleanup(func() {
		signal.Stop(sig)
		close(sig)
		start := time.Now()
		if err := c.Stop(); err != nil {
			t.Errorf("tear the cluster down: %v", err)
		}
		t.Logf("teardown took %s", time.Since(start).Round(time.Second))
	})
	for ref, err := range missing {
		t.Fatalf("image %s did not build: %v", ref, err)
	}
	return c
}

// apply applies the sides' manifest.
func apply(t *testing.T, c *harness.Cluster) {
	t.Helper()
	var buf bytes.Buffer
	tmpl := template.Must(template.New("sides").Parse(sidesYAML))
	if err := tmpl.Execute(&buf, struct{ Image string }{harness.WorkloadImage}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, c, &buf, "apply", "-f", "-")
}

// kubectl runs kubectl against the cluster, with stdin if not nil, and returns its output.
func kubectl(t testing.TB, c *harness.Cluster, stdin *bytes.Buffer, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// awaitPods waits until exactly n pods match the selector in ns, none of them terminating, each
// running with every container ready, and returns them sorted by name.
func awaitPods(t testing.TB, c *harness.Cluster, ns, selector string, n int) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	testutil.Await(t, fmt.Sprintf("%d ready pods %s in %s", n, selector, ns), 10*time.Minute, func() error {
		list, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		pods = pods[:0]
		ready := 0
		for i := range list.Items {
			p := &list.Items[i]
			pods = append(pods, p)
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) {
				ready++
			}
		}
		if len(pods) != n || ready != n {
			return fmt.Errorf("%d pods, %d of them ready", len(pods), ready)
		}
		return nil
	})
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// scale sets the replicas of the side's server Deployment and returns its pods once exactly n run.
func scale(t testing.TB, c *harness.Cluster, ns string, n int) []*corev1.Pod {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(context.Background(), "server", types.MergePatchType,
		[]byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale %s/server to %d: %v", ns, n, err)
	}
	return awaitPods(t, c, ns, "app=server", n)
}

// ipv4 is the pod's IPv4 address.
func ipv4(t testing.TB, p *corev1.Pod) string {
	t.Helper()
	for _, ip := range p.Status.PodIPs {
		if !strings.Contains(ip.IP, ":") {
			return ip.IP
		}
	}
	t.Fatalf("pod %s/%s has no IPv4 address: %v", p.Namespace, p.Name, p.Status.PodIPs)
	return ""
}

// freshRedirect sends the fresh ports to repeatPort's listener, in every server's namespace.
var freshRedirect = fmt.Sprintf(`table ip peers_fresh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport %d-%d redirect to :%d
	}
}
`, firstFresh, lastFresh, repeatPort)

// staticRuleset is the static side's firewall: the allow set of sides.yaml for the client's address,
// judged on the connection's original port like podwall's, fixed in the kernel, no queue. Everything
// else new is refused (TCP with a reset), IPv6 neighbour discovery aside.
func staticRuleset(client string) string {
	return fmt.Sprintf(`table inet peers_static {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		iif lo accept
		meta l4proto ipv6-icmp accept
		meta l4proto tcp ip saddr %s ct original proto-dst { %d, %d, %d-%d } accept
		meta l4proto tcp reject with tcp reset
		reject
	}
}
`, client, repeatPort, iperfPort, firstFresh, lastFresh)
}

// startServers runs the side's servers in its server pod's namespace: the accepting server on
// repeatPort (the fresh ports redirected to it) and iperf3 on iperfPort.
func startServers(t *testing.T, s *side) {
	t.Helper()
	s.netns.run(t, freshRedirect, "nft", "-f", "-")
	s.netns.serveAccept(t, repeatPort)
	background(t, s.netns.command(context.Background(), "iperf3", "--server", "--port", strconv.Itoa(iperfPort)), "iperf3 in "+s.name)
	testutil.Await(t, "iperf3 listening in "+s.name, 30*time.Second, func() error {
		out, err := s.netns.command(context.Background(), "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort)).Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			return fmt.Errorf("not listening yet (%v)", err)
		}
		return nil
	})
}
