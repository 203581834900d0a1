package injector

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// TestRequestLog checks that the webhook's per-request logger carries the request's fields when
// verbose lines are written, and is the base logger otherwise.
func TestRequestLog(t *testing.T) {
	req := &admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "req-1", Namespace: "shop"}}
	for _, verbosity := range []int{0, 5} {
		var lines []string
		base := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: verbosity})
		requestLog(base, req).Info("answered")
		if len(lines) != 1 {
			t.Fatalf("verbosity %d: %d lines, want 1", verbosity, len(lines))
		}
		if got, want := strings.Contains(lines[0], `"requestID"="req-1"`), verbosity >= 5; got != want {
			t.Errorf("verbosity %d: line %s carries the request's fields: %v, want %v", verbosity, lines[0], got, want)
		}
	}
}

// TestDecodePod checks that the webhook decodes pods only, with field names matched exactly.
func TestDecodePod(t *testing.T) {
	for raw, want := range map[string]string{
		`{"apiVersion":"v1","kind":"Pod","spec":{"hostNetwork":true}}`:  "",
		`{"spec":{"hostNetwork":true}}`:                                 "",
		`{"apiVersion":"apps/v1","kind":"Deployment"}`:                  "not a v1 Pod",
		`{"apiVersion":"v2","kind":"Pod"}`:                              "not a v1 Pod",
		`{"apiVersion":"v1","kind":"Pod","spec":{"hostNetwork":"yes"}}`: "decode the pod",
		``: "carries no pod",
	} {
		var pod corev1.Pod
		err := decodePod([]byte(raw), &pod)
		if want == "" {
			if err != nil || !pod.Spec.HostNetwork {
				t.Errorf("%s: %v, hostNetwork %v; want decoded", raw, err, pod.Spec.HostNetwork)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", raw, err, want)
		}
	}
	var pod corev1.Pod
	if err := decodePod([]byte(`{"spec":{"HostNetwork":true}}`), &pod); err != nil || pod.Spec.HostNetwork {
		t.Errorf("a field name in another case: %v, hostNetwork %v; want it ignored", err, pod.Spec.HostNetwork)
	}
}
