package injector

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
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
