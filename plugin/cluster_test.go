package plugin

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/internal/version"
)

// TestAgainstAPIServer runs what the command asks the API server, against a real one: finding
// policygen, its CA, the permissions it checks first, and the ServiceAccount tokens it mints.
func TestAgainstAPIServer(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()
	for _, ns := range []string{"podwall-system", "team"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("policygen", func(t *testing.T) { testFindPolicygen(t, cs) })
	t.Run("CA", func(t *testing.T) { testCA(t, cs) })
	t.Run("permissions", func(t *testing.T) { testPermissions(t, env.Config, cs) })
	t.Run("tokens", func(t *testing.T) { testTokens(t, env.Config, cs) })
	t.Run("command", func(t *testing.T) { testCommand(t, env.KubeConfig) })
}

func wantError(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

func testFindPolicygen(t *testing.T, cs kubernetes.Interface) {
	ctx := context.Background()
	_, err := findPolicygen(ctx, cs, "podwall-system")
	wantError(t, err, "podwall is not installed in namespace podwall-system", "--podwall-namespace")

	labels := map[string]string{"app.kubernetes.io/name": "podwall-policygen"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: serviceName, Namespace: "podwall-system"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "api", Port: apiPort, TargetPort: intstr.FromString("api")},
			{Name: "metrics", Port: 8080, TargetPort: intstr.FromString("metrics")}}}}
	if _, err := cs.CoreV1().Services("podwall-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "policygen-1", Namespace: "podwall-system", Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "policygen", Image: "podwall/policygen",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}, {Name: "api", ContainerPort: 9443}}}}}}
	if pod, err = cs.CoreV1().Pods("podwall-system").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = findPolicygen(ctx, cs, "podwall-system")
	wantError(t, err, "no policygen pod is ready in namespace podwall-system", "1 found")

	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := cs.CoreV1().Pods("podwall-system").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := findPolicygen(ctx, cs, "podwall-system")
	if err != nil {
		t.Fatal(err)
	}
	if want := (target{pod: "policygen-1", port: 9443}); got != want {
		t.Errorf("target %+v, want %+v (the named targetPort resolved on the pod)", got, want)
	}
}

func testCA(t *testing.T, cs kubernetes.Interface) {
	ctx := context.Background()
	_, err := policygenCA(ctx, cs, "podwall-system")
	wantError(t, err, "has no ConfigMap podwall-policygen-ca")

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: caConfigMap, Namespace: "podwall-system"},
		Data: map[string]string{certs.KeyCABundle: "not a certificate"}}
	if _, err := cs.CoreV1().ConfigMaps("podwall-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = policygenCA(ctx, cs, "podwall-system")
	wantError(t, err, "holds no PEM certificate under ca.crt")

	ca, err := certs.NewCA("podwall-policygen-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[certs.KeyCABundle] = string(ca.CertPEM())
	if _, err := cs.CoreV1().ConfigMaps("podwall-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pool, err := policygenCA(ctx, cs, "podwall-system")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("the published CA is not in the pool: %v", err)
	}
}

// as returns a client acting as user.
func as(cfg *rest.Config, user string) kubernetes.Interface {
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate.UserName = user
	return kubernetes.NewForConfigOrDie(cfg)
}

// grant gives user the rules in ns.
func grant(t *testing.T, cs kubernetes.Interface, ns, user string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func testPermissions(t *testing.T, cfg *rest.Config, admin kubernetes.Interface) {
	ctx := context.Background()
	alice := as(cfg, "alice")
	forward := access{verb: "create", resource: "pods", subresource: "portforward", namespace: "podwall-system"}
	token := access{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: "team", name: "viewer"}
	wantError(t, mayAll(ctx, alice, "kubectl podwall ui", forward, token), "do not let you create pods/portforward in namespace podwall-system",
		"kubectl auth can-i create pods/portforward -n podwall-system")
	_, err := findPolicygen(ctx, alice, "podwall-system")
	wantError(t, err, "do not let you get services in namespace podwall-system")

	grant(t, admin, "podwall-system", "alice", rbacv1.PolicyRule{Verbs: []string{"create"}, APIGroups: []string{""}, Resources: []string{"pods/portforward"}})
	// RBAC takes a new Role into account a moment later.
	testutil.Eventually(t, 10*time.Second, func() error {
		err := mayAll(ctx, alice, "kubectl podwall ui", forward, token)
		if err == nil || strings.Contains(err.Error(), "pods/portforward") {
			return fmt.Errorf("with pods/portforward granted: %v", err)
		}
		return nil
	})
	wantError(t, mayAll(ctx, alice, "kubectl podwall ui", forward, token), "do not let you create serviceaccounts/token viewer in namespace team",
		"kubectl auth can-i create serviceaccounts/token/viewer -n team")
	grant(t, admin, "team", "alice", rbacv1.PolicyRule{Verbs: []string{"create"}, APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{"viewer"}})
	testutil.Eventually(t, 10*time.Second, func() error { return mayAll(ctx, alice, "kubectl podwall ui", forward, token) })
}

// capture records the Authorization header of the requests it is given and answers 204.
type capture struct{ got []string }

func (c *capture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.got = append(c.got, r.Header.Get("Authorization"))
	return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: r}, nil
}

func testTokens(t *testing.T, cfg *rest.Config, admin kubernetes.Interface) {
	ctx := context.Background()
	_, err := withServiceAccount(ctx, admin, "team", "viewer", minTokenTTL, &capture{})
	wantError(t, err, "namespace team has no ServiceAccount viewer")
	if _, err := admin.CoreV1().ServiceAccounts("team").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "viewer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = withServiceAccount(ctx, as(cfg, "bob"), "team", "viewer", minTokenTTL, &capture{})
	wantError(t, err, "do not let you create serviceaccounts/token viewer in namespace team")

	// alice may (testPermissions granted it): the token she mints is the ServiceAccount's, for the
	// API server's own audiences, as the UI's TokenReview asks, and lasts the TTL asked.
	var sent capture
	rt, err := withServiceAccount(ctx, as(cfg, "alice"), "team", "viewer", 20*time.Minute, &sent)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, "https://policygen/ui/api/workloads", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(sent.got) != 2 || sent.got[0] != sent.got[1] {
		t.Fatalf("sent %q, want the same token twice (reused until near its expiry)", sent.got)
	}
	token, ok := bearer(sent.got[0])
	if !ok {
		t.Fatalf("sent %q, want a bearer token", sent.got[0])
	}
	review, err := admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !review.Status.Authenticated || review.Status.User.Username != "system:serviceaccount:team:viewer" {
		t.Errorf("the API server says the token is %+v, want system:serviceaccount:team:viewer", review.Status)
	}
	tok, err := serviceAccountTokens{ctx: ctx, cs: as(cfg, "alice"), ns: "team", name: "viewer", ttl: 20 * time.Minute}.Token()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.Expiry); left < 19*time.Minute || left > 21*time.Minute {
		t.Errorf("a token minted for 20m expires in %s", left)
	}
}

// testCommand runs the plugin's command line as kubectl would, against a namespace podwall is not in.
func testCommand(t *testing.T, kubeconfig []byte) {
	file := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(file, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	_, err := run("--kubeconfig", file, "ui", "--browser=false", "--podwall-namespace", "nowhere", "-n", "team", "--service-account", "viewer")
	wantError(t, err, "podwall is not installed in namespace nowhere")
	// envtest's administrator signs in with a client certificate.
	_, err = run("--kubeconfig", file, "ui", "--browser=false")
	wantError(t, err, "client certificate, which cannot be forwarded", "--service-account")
	_, err = run("--kubeconfig", file, "ui", "--token-ttl", "1m")
	wantError(t, err, "--token-ttl 1m0s is shorter than the 10m")
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if out, err := run(args...); err != nil || out != version.String("kubectl-podwall")+"\n" {
			t.Errorf("%q: %q, %v; want %q", args, out, err, version.String("kubectl-podwall"))
		}
	}
	// kubectl_complete-podwall runs `kubectl-podwall __complete ARGS`, which cobra answers.
	for args, want := range map[string][]string{
		"":                 {"status\t", "flows\t", "explain\t", "promote\t", "export\t", "ui\t"},
		"flows --verdict ": {"deny\n", "audit\n"},
		"explain --mode ":  {"Learn\n", "Monitor\n", "Protect\n"},
		"status --output ": {"json\n", "yaml\n"},
	} {
		out, err := run(append([]string{"__complete"}, append(strings.Fields(args), "")...)...)
		for _, w := range want {
			if err != nil || !strings.Contains(out, w) {
				t.Errorf("__complete %q: %v, %q names no %q", args, err, out, w)
			}
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if out, err := run("completion", shell); err != nil || !strings.Contains(out, "kubectl-podwall") {
			t.Errorf("completion %s: %v, %d bytes naming no kubectl-podwall", shell, err, len(out))
		}
	}
}
