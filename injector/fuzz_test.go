package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/sidecar"
)

// FuzzAdmissionReview sends arbitrary bodies through the webhook's HTTP handler, the whole decoding
// path. It must never panic and always answer with an AdmissionReview; a pod it patches must come out
// whole: decodable, with the sidecar and all its volumes, never half-injected.
func FuzzAdmissionReview(f *testing.F) {
	for _, tc := range goldenCases {
		f.Add(review(f, readPodJSON(f, filepath.Join("testdata", tc.name+".yaml"))), tc.strict)
	}
	for _, seed := range []string{
		``, `{}`, `null`, `{"request":null}`, `{"request":{"uid":"1"}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","object":{}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","object":{"spec":{"containers":null}}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","object":{"metadata":{"annotations":{"podwall.io/status":"{"}}}}}}`,
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"DELETE","oldObject":{}}}`,
	} {
		f.Add([]byte(seed), false)
	}
	in := New(SidecarOptions{NativeSidecars: true, PolicyGenURL: "https://policygen:8443"})
	hooks := map[bool]http.Handler{false: in.Webhook(Namespace{}).WithRecoverPanic(false), true: in.Webhook(Namespace{Strict: true}).WithRecoverPanic(false)}
	f.Fuzz(func(t *testing.T, body []byte, strict bool) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, PathInject, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		hooks[strict].ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer is no AdmissionReview (%v): %s", err, rec.Body.Bytes())
		}
		if !out.Response.Allowed || len(out.Response.Patch) == 0 {
			return
		}
		var sent admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &sent); err != nil || sent.Request == nil {
			t.Fatalf("patched a request that does not decode: %v", err)
		}
		checkWhole(t, sent.Request.Object.Raw, out.Response.Patch)
	})
}

// checkWhole applies patch to raw and checks that the pod carries the complete injection.
func checkWhole(t *testing.T, raw, patch []byte) {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch does not decode: %v", err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("patch does not apply: %v", err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatalf("patched pod does not decode: %v", err)
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != sidecar.ContainerName || pod.Annotations[AnnotationStatus] == "" {
		t.Fatalf("patched pod is not injected: %s", patched)
	}
	count := func(name string) int {
		n := 0
		for _, v := range pod.Spec.Volumes {
			if v.Name == name {
				n++
			}
		}
		return n
	}
	for _, v := range injectedVolumes() {
		if count(v) != 1 {
			t.Fatalf("volume %s appears %d times", v, count(v))
		}
	}
	all := slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers)
	if n := len(slices.DeleteFunc(all, func(c corev1.Container) bool { return c.Name != sidecar.ContainerName })); n != 1 {
		t.Fatalf("%d podwall containers", n)
	}
}

// review wraps a pod in a CREATE AdmissionReview.
func review(t testing.TB, podJSON []byte) []byte {
	t.Helper()
	var meta struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(podJSON, &meta)
	r := map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid": "fuzz", "operation": "CREATE", "namespace": meta.Metadata.Namespace,
			"kind":     map[string]string{"version": "v1", "kind": "Pod"},
			"resource": map[string]string{"version": "v1", "resource": "pods"},
			"object":   json.RawMessage(podJSON),
		},
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
