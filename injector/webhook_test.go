package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// TestReadReview checks how the webhook reads an AdmissionReview: what it refuses to read, with
// which status, and that it answers in the review's own version with the request's UID.
func TestReadReview(t *testing.T) {
	wh := New(SidecarOptions{NativeSidecars: true}).Webhook(Namespace{})
	request := func(object string) string {
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"CREATE","namespace":"shop","object":` + object + `}}`
	}
	const pod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	tests := []struct {
		name, body, contentType string
		wantCode                int32
		wantMessage             string
		wantPatch               bool
	}{
		{name: "a pod", body: request(pod), wantCode: http.StatusOK, wantPatch: true},
		{name: "a field name in another case is no field", body: request(`{"spec":{"HostNetwork":true,"containers":[{"name":"web"}]}}`), wantCode: http.StatusOK, wantPatch: true},
		{name: "not a pod", body: request(`{"apiVersion":"apps/v1","kind":"Deployment"}`), wantCode: http.StatusBadRequest, wantMessage: "not a v1 Pod"},
		{name: "a pod of another version", body: request(`{"apiVersion":"v2","kind":"Pod"}`), wantCode: http.StatusBadRequest, wantMessage: "not a v1 Pod"},
		{name: "no pod", body: `{"request":{"uid":"u1","operation":"CREATE"}}`, wantCode: http.StatusBadRequest, wantMessage: "carries no pod"},
		{name: "a null pod", body: request(`null`), wantCode: http.StatusBadRequest, wantMessage: "carries no pod"},
		{name: "a pod that does not decode", body: request(`{"spec":{"hostNetwork":"yes"}}`), wantCode: http.StatusBadRequest, wantMessage: "decode the admission review"},
		{name: "the pod twice", body: `{"request":{"uid":"u1","operation":"CREATE","object":` + pod + `,"object":` + pod + `}}`, wantCode: http.StatusBadRequest, wantMessage: `gives "object" twice`},
		{name: "the request twice", body: `{"request":{"uid":"u1"},"request":{"uid":"u1"}}`, wantCode: http.StatusBadRequest, wantMessage: `gives "request" twice`},
		{name: "not JSON", body: `{"request":`, wantCode: http.StatusBadRequest, wantMessage: "decode the admission review"},
		{name: "another content type", body: request(pod), contentType: "application/yaml", wantCode: http.StatusBadRequest, wantMessage: "expected application/json"},
		{name: "empty", wantCode: http.StatusBadRequest, wantMessage: "request body is empty"},
		{name: "too large", body: request(pod) + strings.Repeat(" ", maxReview), wantCode: http.StatusRequestEntityTooLarge, wantMessage: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body *bytes.Reader
			if tt.body != "" {
				body = bytes.NewReader([]byte(tt.body))
			}
			req := httptest.NewRequest(http.MethodPost, PathInject, nil)
			if body != nil {
				req = httptest.NewRequest(http.MethodPost, PathInject, body)
			}
			req.Header.Set("Content-Type", "application/json")
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			wh.ServeHTTP(rec, req)
			var answer admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil {
				t.Fatalf("answer is no AdmissionReview (%v): %s", err, rec.Body.Bytes())
			}
			resp := answer.Response
			if resp.Result == nil || resp.Result.Code != tt.wantCode || !strings.Contains(resp.Result.Message, tt.wantMessage) {
				t.Fatalf("answer %+v, want code %d saying %q", resp.Result, tt.wantCode, tt.wantMessage)
			}
			if got := len(resp.Patch) > 0; got != tt.wantPatch || resp.Allowed != tt.wantPatch {
				t.Errorf("allowed %v with a patch %v, want %v", resp.Allowed, got, tt.wantPatch)
			}
			if tt.wantCode == http.StatusOK && (resp.UID != "u1" || answer.APIVersion != "admission.k8s.io/v1" || answer.Kind != "AdmissionReview") {
				t.Errorf("answer %s %s for UID %q, want an admission.k8s.io/v1 AdmissionReview for u1", answer.APIVersion, answer.Kind, resp.UID)
			}
		})
	}
}
