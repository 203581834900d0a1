package injector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/internal/testutil"
)

// cluster is a real API server with the test's namespaces.
type cluster struct {
	cfg *rest.Config
	cs  kubernetes.Interface
}

// startCluster starts kube-apiserver and etcd and creates namespaces: opted (opted in), strict (opted
// in, strict), plain (not opted in), and those of podSecurityNamespaces; kube-system and
// podwall-system carry the opt-in label too, to show that the webhook's selector never picks them.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	env := testenv.Start(t, testenv.Options{})
	c := &cluster{cfg: env.Config, cs: kubernetes.NewForConfigOrDie(env.Config)}
	ctx := context.Background()
	optIn := map[string]string{"podwall.io/inject": "enabled"}
	namespaces := map[string]map[string]string{
		"opted":          optIn,
		"strict":         {"podwall.io/inject": "enabled", "podwall.io/strict": "true"},
		"plain":          nil,
		"podwall-system": optIn,
	}
	maps.Copy(namespaces, podSecurityNamespaces)
	for name, labels := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := c.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ks.Labels["podwall.io/inject"] = "enabled"
	if _, err := c.cs.CoreV1().Namespaces().Update(ctx, ks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.apply(t, "rbac.yaml")
	return c
}

// apply creates the objects of manifests/injector/<file>; with dryRun the API server validates them
// (schema, references, RBAC escalation checks) and stores nothing.
func (c *cluster) apply(t testing.TB, file string, opts ...client.CreateOption) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "manifests", "injector", file))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := cl.Create(context.Background(), obj, opts...); err != nil {
			t.Fatalf("%s: %s %s: %v", file, obj.GetKind(), obj.GetName(), err)
		}
	}
}

// as is the API server as user sees it.
func (c *cluster) as(user string) *rest.Config {
	cfg := rest.CopyConfig(c.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return cfg
}

// namespaceUser binds user to a Role named after it, with rules, in each of namespaces, and returns
// a client acting as user: a namespace's user, not a cluster admin.
func (c *cluster) namespaceUser(t testing.TB, user string, rules []rbacv1.PolicyRule, namespaces ...string) *kubernetes.Clientset {
	t.Helper()
	ctx := context.Background()
	for _, ns := range namespaces {
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user}, Rules: rules}
		if _, err := c.cs.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}}}
		if _, err := c.cs.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return kubernetes.NewForConfigOrDie(c.as(user))
}

// asInjector is the API server as the injector's ServiceAccount sees it, bound by rbac.yaml.
func (c *cluster) asInjector() *rest.Config {
	return c.as("system:serviceaccount:podwall-system:podwall-injector")
}

// manifestWebhooks reads the webhook configuration that kubectl apply -k manifests/ installs.
func manifestWebhooks(t testing.TB) admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "manifests", "injector", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &mwc); err != nil {
		t.Fatal(err)
	}
	return mwc
}

// installWebhook creates the webhook configuration of manifests/injector under name, pointed at
// 127.0.0.1:port (the API server cannot reach a Service here), with caBundle as given, each webhook
// then changed by edit.
func (c *cluster) installWebhook(t testing.TB, name string, port int, caBundle []byte, edit ...func(*admissionregistrationv1.MutatingWebhook)) {
	t.Helper()
	mwc := manifestWebhooks(t)
	mwc.Name = name
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		cc.URL = ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", port, *cc.Service.Path))
		cc.Service = nil
		cc.CABundle = caBundle
		for _, e := range edit {
			e(&mwc.Webhooks[i])
		}
	}
	api := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := api.Create(context.Background(), &mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// runInjector runs Run with opts, serving no metrics or health endpoints, until the returned stop is
// called (or the test ends). Its metrics go to a registry of its own unless opts names one.
func (c *cluster) runInjector(t testing.TB, opts Options) (stop func()) {
	t.Helper()
	opts.MetricsAddr, opts.HealthAddr = "0", "0"
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := testr.NewWithInterface(t, testr.Options{})
	go func() { done <- Run(ctx, c.asInjector(), opts, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("injector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// warnings collects the warnings the API server passes on from the webhook.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// createPod creates a pod with a fresh client, so the warnings are this request's.
func (c *cluster) createPod(ns string, pod *corev1.Pod) (*corev1.Pod, []string, error) {
	return createPodAs(c.cfg, ns, pod)
}

// createPodAs creates a pod as the user of cfg, with a fresh client, so the warnings are this request's.
func createPodAs(cfg *rest.Config, ns string, pod *corev1.Pod) (*corev1.Pod, []string, error) {
	w := &warnings{}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	got, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	return got, w.list, err
}

func testPod(mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "app-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:v1"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func injected(p *corev1.Pod) bool {
	return len(p.Spec.InitContainers) > 0 && p.Spec.InitContainers[0].Name == sidecar.ContainerName && p.Annotations[AnnotationStatus] != ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitInjecting waits until pods created in namespace ns come back injected.
func (c *cluster) waitInjecting(t testing.TB, ns string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		p, _, err := c.createPod(ns, testPod())
		if err != nil {
			return err
		}
		if !injected(p) {
			return errors.New("pod created but not injected")
		}
		return nil
	})
}

func TestAgainstAPIServer(t *testing.T) {
	c := startCluster(t)
	t.Run("manifests are accepted", func(t *testing.T) {
		for _, file := range []string{"service.yaml", "deployment.yaml", "webhook.yaml"} {
			c.apply(t, file, client.DryRunAll)
		}
	})
	t.Run("the injector's RBAC grants no pod reads", func(t *testing.T) {
		_, err := kubernetes.NewForConfigOrDie(c.asInjector()).CoreV1().Pods("opted").List(context.Background(), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("list pods as the injector: %v, want forbidden", err)
		}
	})
	t.Run("the injector reads ConfigMaps of podwall-system only", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(c.asInjector())
		if _, err := cs.CoreV1().ConfigMaps("podwall-system").List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Errorf("list configmaps of podwall-system as the injector: %v", err)
		}
		if _, err := cs.CoreV1().ConfigMaps("opted").List(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list configmaps of opted as the injector: %v, want forbidden", err)
		}
	})
	// policygen publishes its CA bundle as it does in a cluster, before the injector starts.
	policyGenCA := []byte(c.policyGenCA(t))
	publish := certs.PublishConfigMap(c.cs, "podwall-system", "podwall-policygen-ca")
	if err := publish(context.Background(), policyGenCA); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c.installWebhook(t, "podwall-injector", port, nil)
	stop := c.runInjector(t, Options{Port: port, TLS: certs.Serving{ExtraHosts: []string{"127.0.0.1"}},
		PolicyGenCAConfigMap: "podwall-policygen-ca", Sidecar: SidecarOptions{Resources: sidecarResources}})
	c.waitInjecting(t, "opted")
	t.Run("policygen's CA bundle reaches the sidecar", func(t *testing.T) { testPolicyGenCA(t, c, policyGenCA) })

	t.Run("managed TLS: Secret and caBundle", func(t *testing.T) {
		ctx := context.Background()
		secret, err := c.cs.CoreV1().Secrets("podwall-system").Get(ctx, "podwall-injector-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podwall-injector", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, wh := range mwc.Webhooks {
			if string(wh.ClientConfig.CABundle) != string(secret.Data[certs.KeyCABundle]) {
				t.Errorf("webhook %s: caBundle is not the Secret's CA bundle", wh.Name)
			}
		}
	})
	t.Run("pods", func(t *testing.T) { testPods(t, c) })
	t.Run("NET_RAW dropped", func(t *testing.T) { testNetRawDropped(t, c) })
	t.Run("golden outputs are valid pods", func(t *testing.T) { testGoldenPodsValid(t, c) })
	t.Run("injected pods meet Pod Security privileged only", func(t *testing.T) { testInjectedPodSecurityLevel(t, c) })
	t.Run("namespaces enforcing baseline or restricted", func(t *testing.T) { testPodSecurityRefusal(t, c) })
	t.Run("a namespace user's pods that reach for the sidecar", func(t *testing.T) { testTenantPods(t, c) })
	t.Run("mesh proxy added by a later webhook", func(t *testing.T) { testMeshAddedLater(t, c) })
	t.Run("a namespace user's changes to an injected pod after its creation", func(t *testing.T) { testLifecycle(t, c) })
	t.Run("the platform's ConfigMap", func(t *testing.T) { testPlatformConfigMap(t, c) })
	t.Run("webhook down blocks only opted-in namespaces", func(t *testing.T) {
		stop()
		testutil.Eventually(t, 30*time.Second, func() error {
			_, _, err := c.createPod("opted", testPod())
			if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
				return fmt.Errorf("pod create in opted-in namespace with the injector down: %v, want failed calling webhook", err)
			}
			return nil
		})
		for _, ns := range []string{"plain", "kube-system", "podwall-system"} {
			if _, _, err := c.createPod(ns, testPod()); err != nil {
				t.Errorf("namespace %s: %v", ns, err)
			}
		}
	})
	t.Run("webhook configuration removed", func(t *testing.T) {
		if err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), "podwall-injector", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testLifecycleWithoutInjector(t, c)
	})
	t.Run("external certificate", func(t *testing.T) { testExternalCerts(t, c) })
}

// testPods checks what the API server stores for each kind of pod, through the real webhook.
func testPods(t *testing.T, c *cluster) {
	tests := []struct {
		name         string
		ns           string
		pod          *corev1.Pod
		wantInjected bool
		wantWarning  string
		wantDenied   string
	}{
		{name: "opted-in namespace", ns: "opted", pod: testPod(), wantInjected: true},
		{name: "not opted in", ns: "plain", pod: testPod()},
		{name: "kube-system never", ns: "kube-system", pod: testPod()},
		{name: "podwall-system never", ns: "podwall-system", pod: testPod()},
		{name: "opt-out honoured", ns: "opted", pod: testPod(optOut)},
		{name: "opt-out ignored when strict", ns: "strict", pod: testPod(optOut), wantInjected: true, wantWarning: "opt-out ignored"},
		{name: "hostNetwork skipped with a warning", ns: "opted", pod: testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), wantWarning: "hostNetwork"},
		{name: "NET_ADMIN app warned", ns: "opted", pod: testPod(netAdmin), wantInjected: true, wantWarning: "NET_ADMIN"},
		{name: "NET_ADMIN app denied when strict", ns: "strict", pod: testPod(netAdmin), wantDenied: "is strict"},
		{name: "NET_RAW kept on request, warned", ns: "opted", pod: testPod(allowNetRaw), wantInjected: true, wantWarning: "keep NET_RAW, which allows SO_MARK"},
		{name: "NET_RAW opt-out denied when strict", ns: "strict", pod: testPod(allowNetRaw), wantDenied: "allow-net-raw=true would keep NET_RAW"},
		{name: "NET_RAW add warned", ns: "opted", pod: testPod(addNetRaw), wantInjected: true, wantWarning: `"app" adds NET_RAW`},
		{name: "NET_RAW add denied when strict", ns: "strict", pod: testPod(addNetRaw), wantDenied: `"app" adds NET_RAW`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns, err := c.createPod(tt.ns, tt.pod)
			if tt.wantDenied != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantDenied) {
					t.Fatalf("error %v, want a denial saying %q", err, tt.wantDenied)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if injected(got) != tt.wantInjected {
				t.Errorf("injected %v, want %v: init containers %v", injected(got), tt.wantInjected, names(got.Spec.InitContainers))
			}
			if w := strings.Join(warns, "\n"); !strings.Contains(w, tt.wantWarning) || (tt.wantWarning == "" && w != "") {
				t.Errorf("warnings %q, want %q", warns, tt.wantWarning)
			}
			if tt.wantInjected && *got.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("podwall is not a native sidecar on a %s server", "v1.37")
			}
		})
	}
}

func optOut(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: "false"} }

func netAdmin(p *corev1.Pod) {
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
}

func allowNetRaw(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationAllowNetRaw: "true"} }

func addNetRaw(p *corev1.Pod) {
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW"}}}
}

// testNetRawDropped checks what the API server stores for a pod of an opted-in namespace: its app
// container without NET_RAW, ICMP datagram sockets open to every group, and the sidecar's own
// capabilities untouched.
func testNetRawDropped(t *testing.T, c *cluster) {
	got, _, err := c.createPod("opted", testPod(func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "setup:v1"}}
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range slices.Concat(got.Spec.InitContainers, got.Spec.Containers) {
		caps := ct.SecurityContext.Capabilities
		want := []corev1.Capability{netRaw}
		if ct.Name == sidecar.ContainerName {
			want = []corev1.Capability{"ALL"}
		}
		if !slices.Equal(caps.Drop, want) {
			t.Errorf("container %s drops %v, want %v", ct.Name, caps.Drop, want)
		}
	}
	want := []corev1.Sysctl{{Name: "net.ipv4.ping_group_range", Value: "0 2147483647"}}
	if sc := got.Spec.SecurityContext; sc == nil || !slices.Equal(sc.Sysctls, want) {
		t.Errorf("pod security context %+v, want sysctls %v", sc, want)
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// testGoldenPodsValid creates every injected golden pod as it is (no webhook: namespace plain), so
// that the API server's validation judges each layout and option set the fixtures show.
func testGoldenPodsValid(t *testing.T, c *cluster) {
	for _, tc := range goldenCases {
		pod, ok := injectedGoldenPod(t, tc.name)
		if !ok {
			continue
		}
		pod.Namespace, pod.Name, pod.GenerateName = "", "", "golden-"
		if _, err := c.cs.CoreV1().Pods("plain").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// policyGenCA is a CA bundle as policygen publishes it.
func (c *cluster) policyGenCA(t *testing.T) string {
	t.Helper()
	ca, err := certs.NewCA("podwall-policygen-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return string(ca.CertPEM())
}

// testPolicyGenCA checks that each injected sidecar gets the CA bundle policygen published in
// podwall-system, and that while none is published pods are refused with a message that says so,
// rather than started with a sidecar that could never verify policygen.
func testPolicyGenCA(t *testing.T, c *cluster, published []byte) {
	ctx := context.Background()
	caOf := func(p *corev1.Pod) string {
		for _, ct := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			for _, e := range ct.Env {
				if ct.Name == sidecar.ContainerName && e.Name == sidecar.KeyPolicyGenCA.Env() {
					return e.Value
				}
			}
		}
		return ""
	}
	p, _, err := c.createPod("opted", testPod())
	if err != nil {
		t.Fatal(err)
	}
	if got := caOf(p); got != string(published) {
		t.Fatalf("sidecar's %s = %q, want the published bundle", sidecar.KeyPolicyGenCA.Env(), got)
	}
	cms := c.cs.CoreV1().ConfigMaps("podwall-system")
	if err := cms.Delete(ctx, "podwall-policygen-ca", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		_, _, err := c.createPod("opted", testPod())
		if err == nil || !strings.Contains(err.Error(), "policygen's CA bundle is not published yet") {
			return fmt.Errorf("pod create with no CA published: %v, want a refusal that says so", err)
		}
		return nil
	})
	if err := certs.PublishConfigMap(c.cs, "podwall-system", "podwall-policygen-ca")(ctx, published); err != nil {
		t.Fatal(err)
	}
	c.waitInjecting(t, "opted")
}
