//go:build bench

package peers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/e2e/harness"
	"podwall.io/podwall/internal/testutil"
)

// KNP's names: its module (pinned in bench/knp/go.mod), its nftables table and the set of the local
// pod addresses its NetworkPolicies select, in the host's network namespace.
const (
	knpModule = "sigs.k8s.io/kube-network-policies"
	knpTable  = "kube-network-policies"
	knpSet    = "podips-v4"
	// knpQueue is the queue number upstream's install.yaml gives it.
	knpQueue = 98
)

// knp is kube-network-policies as the bench built and runs it.
type knp struct {
	bin     string // hack/build-knp.sh's binary
	variant string // stock or compat (see hack/build-knp.sh)
	version string
	image   string
	agent   container // once running
}

// buildKNP builds (once, cached) the variant of KNP this kernel takes, and its image.
func buildKNP(t *testing.T, root string) *knp {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "hack", "build-knp.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/build-knp.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	k := &knp{bin: lines[len(lines)-1]}
	k.variant = strings.TrimPrefix(filepath.Base(k.bin), "kube-network-policies-")
	k.version = strings.TrimPrefix(filepath.Base(filepath.Dir(k.bin)), "knp-")
	k.image = "podwall.test/kube-network-policies:" + k.version + "-" + k.variant
	t.Logf("kube-network-policies %s, %s build (%s)", k.version, k.variant, k.bin)
	return k
}

// load builds KNP's image (its binary alone, at /netpol as upstream's image has it at /bin/netpol)
// and imports it into the cluster's containerd.
func (k *knp) load(ctx context.Context, t *testing.T, c *harness.Cluster, root string) {
	t.Helper()
	tarball, _, err := harness.ImageBuilder{ModuleDir: root, WorkDir: t.TempDir()}.Build(ctx,
		[]harness.ImageSpec{{Ref: k.image, File: k.bin, Binary: "netpol"}})
	if err != nil {
		t.Fatalf("KNP's image: %v", err)
	}
	if err := harness.ImportImages(ctx, c, tarball); err != nil {
		t.Fatal(err)
	}
}

// deploy runs KNP as upstream's install.yaml (from the module's source) does: its ServiceAccount,
// ClusterRole and binding as they are, and its DaemonSet (hostNetwork, privileged) with the bench's
// image and arguments: the node's name as hostname, fail-open off, --v below 2 (KNP logs every packet
// at 2), its metrics on a free loopback port. The DaemonSet's hostPath mounts (containerd's NRI socket,
// /var/run/netns) are left out: this cluster's containerd runs no NRI, so KNP learns pod addresses from
// the API server, and nothing else of v0.8.0 reads the mounts. deploy returns once the agent runs.
func (k *knp) deploy(ctx context.Context, t *testing.T, c *harness.Cluster, root string) {
	t.Helper()
	objs := upstreamInstall(t, root)
	var ds *appsv1.DaemonSet
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = c.Client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = c.Client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = c.Client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.DaemonSet:
			ds = o
		default:
			t.Fatalf("KNP's install.yaml: unexpected %T", obj)
		}
		if err != nil {
			t.Fatalf("create KNP's %T: %v", obj, err)
		}
	}
	if ds == nil || len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("KNP's install.yaml: want a DaemonSet of one container, got %v", ds)
	}
	spec := &ds.Spec.Template.Spec
	spec.Volumes = nil
	ctr := &spec.Containers[0]
	ctr.VolumeMounts = nil
	ctr.Image, ctr.ImagePullPolicy = k.image, corev1.PullNever
	ctr.Command = []string{"/netpol"}
	ctr.Args = []string{"--hostname-override=$(MY_NODE_NAME)", "--fail-open=false", "--v=1",
		"--nfqueue-id=" + strconv.Itoa(knpQueue), "--metrics-bind-address=" + freeLoopback(t)}
	spec.TerminationGracePeriodSeconds = ptr.To[int64](10)
	if _, err := c.Client.AppsV1().DaemonSets(ds.Namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create KNP's DaemonSet: %v", err)
	}
	sel := metav1.FormatLabelSelector(ds.Spec.Selector)
	pod := awaitPods(t, c, ds.Namespace, sel, 1)[0]
	k.agent = containerOf(t, pod, ctr.Name)
	t.Logf("KNP runs: pod %s/%s, args %v", pod.Namespace, pod.Name, ctr.Args)
}

// upstreamInstall decodes install.yaml of the KNP module that bench/knp pins.
func upstreamInstall(t *testing.T, root string) []runtime.Object {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", knpModule)
	cmd.Dir = filepath.Join(root, "bench", "knp")
	dir, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s in bench/knp: %v", knpModule, err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("KNP's install.yaml: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "---" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("KNP's install.yaml: %v", err)
		}
		objs = append(objs, obj)
	}
}

// awaitAddresses waits until KNP's table holds exactly the given local pod addresses (those its
// NetworkPolicies select) in its set.
func (k *knp) awaitAddresses(t *testing.T, want []string) {
	t.Helper()
	slices.Sort(want)
	testutil.Await(t, "KNP's set "+knpSet+" holding "+strings.Join(want, ","), 5*time.Minute, func() error {
		got, err := knpAddresses()
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("it holds %v", got)
		}
		return nil
	})
}

// knpAddresses lists the addresses in KNP's set, sorted.
func knpAddresses() ([]string, error) {
	out, err := exec.Command("nft", "-j", "list", "set", "inet", knpTable, knpSet).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list set: %v: %s", err, out)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []string `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("nft -j list set: %v: %s", err, out)
	}
	var addrs []string
	for _, o := range doc.Nftables {
		if o.Set != nil {
			addrs = append(addrs, o.Set.Elem...)
		}
	}
	slices.Sort(addrs)
	return addrs, nil
}

// stop ends KNP as it cleans up: SIGINT (on SIGTERM it exits leaving its table, and with it the
// queue rules, in the host's ruleset), then, once the table is gone, deletes the DaemonSet, whose pod
// would otherwise restart it, and waits for the pod to go. A table still there at the end is removed,
// and the test fails.
func (k *knp) stop(t *testing.T, c *harness.Cluster) {
	t.Helper()
	if k.agent.id != "" {
		for _, pid := range k.agent.pids(t) {
			syscall.Kill(pid, syscall.SIGINT)
		}
		start := time.Now()
		if poll(30*time.Second, func() bool { return !knpTablePresent() }) {
			t.Logf("KNP removed its table %s after SIGINT", time.Since(start).Round(time.Millisecond))
		}
	}
	ctx := context.Background()
	if err := c.Client.AppsV1().DaemonSets("kube-system").Delete(ctx, knpTable, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete KNP's DaemonSet: %v", err)
	}
	if !poll(time.Minute, func() bool {
		pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app=" + knpTable})
		return err == nil && len(pods.Items) == 0
	}) {
		t.Errorf("KNP's pod still there a minute after its DaemonSet was deleted")
	}
	removeKNPTable(t)
}

// poll checks cond until it holds or timeout passes, and says whether it held. Unlike testutil.Await
// it never stops the test: the teardown must go on.
func poll(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeKNPTable deletes KNP's table if it is still in the host's ruleset, failing the test: KNP left
// it (or the bench stopped before KNP could remove it).
func removeKNPTable(t testing.TB) {
	if !knpTablePresent() {
		return
	}
	t.Errorf("KNP's table inet %s is still in the host's ruleset; removing it", knpTable)
	if out, err := exec.Command("nft", "delete", "table", "inet", knpTable).CombinedOutput(); err != nil {
		t.Errorf("nft delete table inet %s: %v: %s", knpTable, err, out)
	}
}

func knpTablePresent() bool {
	return exec.Command("nft", "list", "table", "inet", knpTable).Run() == nil
}

// freeLoopback is a free TCP address on the host's loopback.
func freeLoopback(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
