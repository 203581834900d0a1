package kubeauth_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/kubeauth"
)

func request(token string) *http.Request {
	r, _ := http.NewRequest("GET", "https://policygen/", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// who is what the tests compare of a user: name and the pod extras.
func who(u user.Info) []string {
	if u == nil {
		return nil
	}
	return append([]string{u.GetName()}, append(u.GetExtra()[serviceaccount.PodNameKey], u.GetExtra()[serviceaccount.PodUIDKey]...)...)
}

// TestReviewer asks a real API server about real tokens and RBAC.
func TestReviewer(t *testing.T) {
	cfg, c := pgtest.Start(t)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	cs := kubernetes.NewForConfigOrDie(cfg)
	rv, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("authenticate", func(t *testing.T) { testAuthenticate(t, k, cs, rv) })
	t.Run("allowed", func(t *testing.T) { testAllowed(t, k, cs, rv) })
	t.Run("without the right to review", func(t *testing.T) {
		nobody := rest.CopyConfig(cfg)
		nobody.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
		testUnanswered(t, kubernetes.NewForConfigOrDie(nobody))
	})
}

// testAuthenticate: a pod's bound token for the audience asked, the same pod's token for other
// audiences, a kubectl-style token, garbage.
func testAuthenticate(t *testing.T, k pgtest.Cluster, cs kubernetes.Interface, rv *kubeauth.Reviewer) {
	pgtest.Namespace(t, k.C, "shop", nil)
	pod := k.Deployment("shop", "web", "web", "10.1.0.1")[0]
	kubectl, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(context.Background(), "web", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bound := []string{"system:serviceaccount:shop:web", pod.Name, string(pod.UID)}
	tests := []struct {
		name      string
		token     string
		audiences []string
		want      []string
		err       error
	}{
		{"no token", "", []string{"podwall"}, nil, kubeauth.ErrNoToken},
		{"garbage", "not-a-token", []string{"podwall"}, nil, kubeauth.ErrRefused},
		{"a pod's token for the audience asked", k.Token(pod, "podwall"), []string{"podwall"}, bound, nil},
		{"a pod's token for another audience", k.Token(pod, "other"), []string{"podwall"}, nil, kubeauth.ErrRefused},
		{"a pod's token where the API server's audiences are asked", k.Token(pod, "podwall"), nil, nil, kubeauth.ErrRefused},
		{"a kubectl token", kubectl.Status.Token, nil, []string{"system:serviceaccount:shop:web"}, nil},
		{"a kubectl token where podwall is asked", kubectl.Status.Token, []string{"podwall"}, nil, kubeauth.ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(tt.token)
			// Twice: the second answer comes from the cache, and the request must still carry its token.
			for range 2 {
				u, err := rv.Authenticate(r, tt.audiences...)
				if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				if diff := cmp.Diff(tt.want, who(u)); diff != "" {
					t.Errorf("user (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// testAllowed asks RBAC about a user bound to list WorkloadPolicies: list is allowed, patch is not.
func testAllowed(t *testing.T, k pgtest.Cluster, cs kubernetes.Interface, rv *kubeauth.Reviewer) {
	pgtest.Namespace(t, k.C, "ops", nil)
	k.Create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "viewer"}})
	k.Create(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "viewer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"podwall.io"}, Resources: []string{"workloadpolicies"}, Verbs: []string{"list"}}}})
	k.Create(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "viewer"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ops", Name: "viewer"}}})
	tr, err := cs.CoreV1().ServiceAccounts("ops").CreateToken(context.Background(), "viewer", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := rv.Authenticate(request(tr.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	for verb, want := range map[string]bool{"list": true, "patch": false} {
		got, err := rv.Allowed(context.Background(), authorizer.AttributesRecord{User: u, Verb: verb, APIGroup: "podwall.io",
			APIVersion: "v1alpha1", Resource: "workloadpolicies", Namespace: "shop", Name: "deployment-web", ResourceRequest: true})
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", verb, got, err, want)
		}
	}
}

// TestUnreachable: see testUnanswered.
func TestUnreachable(t *testing.T) {
	testUnanswered(t, kubernetes.NewForConfigOrDie(&rest.Config{Host: "https://" + pgtest.FreeAddr(t)}))
}

// testUnanswered: when the API server cannot be asked, or will not answer policygen, neither a token
// nor a question is answered as refused (the callers answer 503 and the client retries).
func testUnanswered(t *testing.T, cs kubernetes.Interface) {
	rv, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rv.Authenticate(request("some-token"), "podwall")
	if err == nil || errors.Is(err, kubeauth.ErrRefused) || errors.Is(err, kubeauth.ErrNoToken) {
		t.Errorf("authenticate: %v, want an error that is not a refusal", err)
	}
	u := &user.DefaultInfo{Name: "someone"}
	if _, err := rv.Allowed(context.Background(), authorizer.AttributesRecord{User: u, Verb: "list", Resource: "pods", ResourceRequest: true}); err == nil {
		t.Error("allowed: no error, want one")
	}
}
