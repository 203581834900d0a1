package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/ui"
)

// testAccept: a Service selecting db (in Protect) waits as a proposal, which the policy page lists;
// accepting it from the UI takes what a mode change takes (JSON only, no unknown field, the UI's own
// origin or no browser, RBAC to patch the policy), refuses a name not pending, and names the operator.
func testAccept(t *testing.T, w *world) {
	const path = "api/policies/shop/deployment-db/accept"
	ctx := context.Background()
	w.cluster.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-public"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Protocol: "TCP", Port: 5432, TargetPort: intstr.FromInt32(5432)}}}})
	var name string
	testutil.Await(t, "the proposal on the policy page", 20*time.Second, func() error {
		var page ui.PolicyPage
		if err := getJSON(w, "api/policies/shop/deployment-db", w.viewer, &page); err != nil {
			return err
		}
		if page.PendingProposals != 1 || len(page.Proposals) != 1 {
			return fmt.Errorf("proposals %d %+v", page.PendingProposals, page.Proposals)
		}
		pr := page.Proposals[0]
		if pr.Source != "Service shop/db-public selects this workload" || pr.Direction != "ingress" ||
			pr.Rule != "Allow connections from addresses 0.0.0.0/0 or addresses ::/0 on TCP 5432 (m-svc-db-public)." {
			return fmt.Errorf("proposal %+v", pr)
		}
		name = pr.Name
		return nil
	})
	// policygen, under the manifests' RBAC, announced it on the policy.
	w.awaitEvent(t, "deployment-db", "ManifestRuleProposed", name)
	self := strings.TrimSuffix(w.url, "/ui/")
	body := `{"proposals":["` + name + `"]}`
	refused := []struct {
		name, token, contentType, body string
		headers                        map[string]string
		want                           int
		wantError                      string
	}{
		{"a text/plain body", w.operator, "text/plain", body, nil, http.StatusUnsupportedMediaType, "application/json"},
		{"an unknown field", w.operator, "application/json", `{"proposals":["` + name + `"],"all":true}`, nil, http.StatusBadRequest, `unknown field "all"`},
		{"another site's origin", w.operator, "application/json", body, map[string]string{"Origin": "https://evil.example"},
			http.StatusForbidden, "evil.example"},
		{"a cross-site fetch", w.operator, "application/json", body, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, "cross-site"},
		{"a viewer", w.viewer, "application/json", body, nil, http.StatusForbidden, "patch WorkloadPolicy shop/deployment-db"},
		{"a name not pending", w.operator, "application/json", `{"proposals":["ingress-m-svc-db-public-00000000"]}`, nil,
			http.StatusConflict, "not pending"},
		{"no name", w.operator, "application/json", `{"proposals":[]}`, nil, http.StatusBadRequest, "at least one"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := post(t, w, path, tt.token, tt.contentType, tt.body, tt.headers)
			if code != tt.want || !strings.Contains(msg, tt.wantError) {
				t.Errorf("got %d %q, want %d naming %q", code, msg, tt.want, tt.wantError)
			}
			p := storedPolicy(t, w, "deployment-db")
			if _, ok := p.Annotations[v1.AcceptProposalsAnnotation]; ok || slices.ContainsFunc(p.Spec.Ingress, isPublic) {
				t.Errorf("a refused accept left %q and rules %+v", p.Annotations[v1.AcceptProposalsAnnotation], p.Spec.Ingress)
			}
		})
	}
	if code, msg := post(t, w, path, w.operator, "application/json", body, map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}); code != http.StatusOK {
		t.Fatalf("accept from the UI's page: %d %q", code, msg)
	}
	testutil.Await(t, "the accepted rule", 20*time.Second, func() error {
		p := storedPolicy(t, w, "deployment-db")
		if !slices.ContainsFunc(p.Spec.Ingress, isPublic) || len(p.Status.Proposals) != 0 || p.Spec.Mode != policy.Protect {
			return fmt.Errorf("ingress %+v proposals %+v mode %s", p.Spec.Ingress, p.Status.Proposals, p.Spec.Mode)
		}
		if _, ok := p.Annotations[v1.AcceptedByAnnotation]; ok {
			return fmt.Errorf("%s not consumed", v1.AcceptedByAnnotation)
		}
		return nil
	})
	// The acceptance Event names the operator.
	w.awaitEvent(t, "deployment-db", "ManifestRuleAccepted", "accepted "+name+" for system:serviceaccount:ops:operator")
	if err := w.c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-public"}}); err != nil {
		t.Fatal(err)
	}
	// A Service gone only tightens: its rule leaves the Protect policy at once.
	testutil.Await(t, "the rule gone with its Service", 20*time.Second, func() error {
		if p := storedPolicy(t, w, "deployment-db"); slices.ContainsFunc(p.Spec.Ingress, isPublic) {
			return fmt.Errorf("ingress %+v", p.Spec.Ingress)
		}
		return nil
	})
}

func isPublic(r v1.Rule) bool { return r.Name == "m-svc-db-public" }

// getJSON reads a UI API path as the token's user into v.
func getJSON(w *world, path, token string, v any) error {
	req, _ := http.NewRequest("GET", w.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := w.https.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// awaitEvent waits for an Event of reason on the shop WorkloadPolicy whose note contains want.
func (w *world) awaitEvent(t *testing.T, policyName, reason, want string) {
	t.Helper()
	testutil.Await(t, reason+" event", 20*time.Second, func() error {
		var list eventsv1.EventList
		if err := w.c.List(context.Background(), &list, client.InNamespace("shop")); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == policyName && e.Reason == reason && strings.Contains(e.Note, want) {
				return nil
			}
		}
		return fmt.Errorf("no %s event containing %q among %d", reason, want, len(list.Items))
	})
}
