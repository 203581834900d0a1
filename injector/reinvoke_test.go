package injector

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/testutil"
)

// testMeshAddedLater registers a second webhook, called after podwall's (the API server orders
// configurations by name), that adds an istio-proxy container as Istio's injector would. The API
// server then re-invokes podwall's webhook (reinvocationPolicy IfNeeded), whose second pass must
// replace its first: one podwall container, now with Envoy's ports.
func testMeshAddedLater(t *testing.T, c *cluster) {
	istio := &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Patched("", jsonpatch.NewOperation("add", "/spec/containers/-", map[string]string{"name": "istio-proxy", "image": "istio/proxyv2:1.24.0"}))
	})}
	srv := httptest.NewTLSServer(istio)
	defer srv.Close()
	api := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-fake-istio"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "sidecar-injector.istio.test", AdmissionReviewVersions: []string{"v1"},
			SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(srv.URL + "/"),
				CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "opted"}},
		}},
	}
	if _, err := api.Create(context.Background(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = api.Delete(context.Background(), mwc.Name, metav1.DeleteOptions{}) }()

	var got *corev1.Pod
	testutil.Eventually(t, 10*time.Second, func() error { // until the API server's webhook list has the new configuration
		var err error
		got, _, err = c.createPod("opted", testPod())
		if err == nil && len(got.Spec.Containers) < 2 {
			err = errors.New("istio-proxy not added yet")
		}
		return err
	})
	all := append(names(got.Spec.InitContainers), names(got.Spec.Containers)...)
	if count(all, sidecar.ContainerName) != 1 || count(all, "istio-proxy") != 1 {
		t.Fatalf("containers %v, want one podwall and one istio-proxy", all)
	}
	if env := envOf(got.Spec.InitContainers[0], "PODWALL_MESH_OUTBOUND_PORTS"); env != "15001" {
		t.Fatalf("PODWALL_MESH_OUTBOUND_PORTS %q after re-invocation, want 15001", env)
	}
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
