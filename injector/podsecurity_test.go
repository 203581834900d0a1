package injector

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
)

// podSecurityNamespaces are startCluster's namespaces that enforce a Pod Security level: psa-<level>
// without podwall, opted-<level> opted in, strict-restricted opted in and strict.
var podSecurityNamespaces = map[string]map[string]string{
	"psa-baseline":      {LabelPodSecurityEnforce: "baseline"},
	"psa-privileged":    {LabelPodSecurityEnforce: "privileged"},
	"opted-baseline":    {"podwall.io/inject": "enabled", LabelPodSecurityEnforce: "baseline"},
	"opted-restricted":  {"podwall.io/inject": "enabled", LabelPodSecurityEnforce: "restricted"},
	"opted-privileged":  {"podwall.io/inject": "enabled", LabelPodSecurityEnforce: "privileged"},
	"strict-restricted": {"podwall.io/inject": "enabled", "podwall.io/strict": "true", LabelPodSecurityEnforce: "restricted"},
}

// testInjectedPodSecurityLevel asks the API server's PodSecurity admission which level the injected
// golden pods meet, creating them as they are (no webhook: the psa- namespaces are not opted in).
// Baseline refuses each for the podwall container (a fixture's app may add its own reasons), never for
// the injected sysctl, which it admits alone; restricted, stricter, would too; privileged admits each.
func testInjectedPodSecurityLevel(t *testing.T, c *cluster) {
	ctx := context.Background()
	const onlyPodwall = `violates PodSecurity "baseline:latest": non-default capabilities (container "podwall" must not include "NET_ADMIN" in securityContext.capabilities.add)`
	for _, tc := range goldenCases {
		pod, ok := injectedGoldenPod(t, tc.name)
		if !ok {
			continue
		}
		pod.Namespace, pod.Name, pod.GenerateName = "", "", "golden-"
		_, err := c.cs.CoreV1().Pods("psa-baseline").Create(ctx, pod, metav1.CreateOptions{})
		switch {
		case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "baseline:latest"`):
			t.Errorf("%s under baseline: %v, want forbidden by PodSecurity", tc.name, err)
		case !strings.Contains(err.Error(), `"podwall"`) || strings.Contains(err.Error(), "sysctl"):
			t.Errorf("%s under baseline: %v, want the podwall container named and the sysctl not", tc.name, err)
		case tc.name == "plain-pod" && !strings.HasSuffix(err.Error(), onlyPodwall):
			t.Errorf("%s under baseline: %v, want only %q", tc.name, err, onlyPodwall)
		}
		if _, err := c.cs.CoreV1().Pods("psa-privileged").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Errorf("%s under privileged: %v", tc.name, err)
		}
	}
	ping := testPod(func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: sysctlPingGroupRange, Value: pingAllGroups}}}
	})
	if _, err := c.cs.CoreV1().Pods("psa-baseline").Create(ctx, ping, metav1.CreateOptions{}); err != nil {
		t.Errorf("app pod with the injected sysctl under baseline: %v", err)
	}
}

// testPodSecurityRefusal creates pods through the webhook in opted-in namespaces that enforce a Pod
// Security level: podwall refuses the pods it would inject where the level is baseline or restricted,
// with its own message (not PodSecurity's), and injects where it is privileged.
func testPodSecurityRefusal(t *testing.T, c *cluster) {
	tests := []struct {
		name, ns     string
		pod          *corev1.Pod
		wantInjected bool
		wantLevel    string // refused by podwall, naming this level
	}{
		{name: "baseline refused", ns: "opted-baseline", pod: testPod(), wantLevel: "baseline"},
		{name: "restricted refused", ns: "opted-restricted", pod: testPod(), wantLevel: "restricted"},
		{name: "strict: opt-out ignored, refused", ns: "strict-restricted", pod: testPod(optOut), wantLevel: "restricted"},
		{name: "opt-out under baseline admitted as it is", ns: "opted-baseline", pod: testPod(optOut)},
		{name: "privileged injected", ns: "opted-privileged", pod: testPod(), wantInjected: true},
		{name: "no label injected", ns: "opted", pod: testPod(), wantInjected: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := c.createPod(tt.ns, tt.pod)
			if tt.wantLevel != "" {
				if err == nil {
					t.Fatalf("pod admitted (injected %v), want podwall's refusal", injected(got))
				}
				for _, want := range []string{
					`admission webhook "inject`,
					`podwall: namespace ` + tt.ns + ` enforces Pod Security level "` + tt.wantLevel + `" (label pod-security.kubernetes.io/enforce)`,
					`the sidecar adds NET_ADMIN`,
					`label the namespace pod-security.kubernetes.io/enforce=privileged (keeping pod-security.kubernetes.io/warn and pod-security.kubernetes.io/audit at ` + tt.wantLevel,
					`remove its label podwall.io/inject=enabled`,
					`a CNI-mode podwall, which would need no capability in the pod, is not available yet`,
				} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q\nwant it to say %q", err, want)
					}
				}
				if strings.Contains(err.Error(), "violates PodSecurity") {
					t.Errorf("error %q is PodSecurity's, want podwall's", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if injected(got) != tt.wantInjected {
				t.Errorf("injected %v, want %v", injected(got), tt.wantInjected)
			}
		})
	}
}

// TestWebhookRoutes checks that the webhooks of manifests/injector/webhook.yaml call exactly the
// injector's paths, each selecting the namespaces its route stands for.
func TestWebhookRoutes(t *testing.T) {
	mwc := manifestWebhooks(t)
	want := routes()
	for _, wh := range mwc.Webhooks {
		path := *wh.ClientConfig.Service.Path
		route, ok := want[path]
		if !ok {
			t.Errorf("webhook %s calls %s, which the injector does not serve", wh.Name, path)
			continue
		}
		delete(want, path)
		strict := metav1.LabelSelectorRequirement{Key: "podwall.io/strict", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}
		if route.Strict {
			strict.Operator = metav1.LabelSelectorOpIn
		}
		enforce := metav1.LabelSelectorRequirement{Key: LabelPodSecurityEnforce, Operator: metav1.LabelSelectorOpNotIn, Values: unmetLevels}
		if route.Enforce != "" {
			enforce.Operator, enforce.Values = metav1.LabelSelectorOpIn, []string{route.Enforce}
		}
		for _, req := range []metav1.LabelSelectorRequirement{strict, enforce} {
			i := slices.IndexFunc(wh.NamespaceSelector.MatchExpressions, func(r metav1.LabelSelectorRequirement) bool { return r.Key == req.Key })
			if i < 0 {
				t.Errorf("webhook %s: no selector on %s", wh.Name, req.Key)
			} else if diff := cmp.Diff(req, wh.NamespaceSelector.MatchExpressions[i]); diff != "" {
				t.Errorf("webhook %s (-want +got):\n%s", wh.Name, diff)
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("no webhook calls %v", sets.List(sets.KeySet(want)))
	}
}
