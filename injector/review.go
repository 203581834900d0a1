package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	admissionmetrics "sigs.k8s.io/controller-runtime/pkg/webhook/admission/metrics"
)

// maxReview is the largest AdmissionReview the webhook reads, controller-runtime's limit: two objects
// of 3 MB at most (the API server's limit on a stored object, JSON-encoded) and the rest of the review.
const maxReview = 7 << 20

// ServeHTTP answers one AdmissionReview (admission.k8s.io/v1) of the API server, as controller-runtime's
// webhooks do: the same limits and checks of the request, the same answers to a request it cannot
// read, a panic answered with an error. What it does differently is cheaper: it decodes the review
// and the pod in it at once, the pod as the API machinery decodes JSON (field names matched exactly),
// where controller-runtime decodes the review, with a first pass to find its kind, and then the pod,
// again with a first pass.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	buf := getBuffer()
	defer putBuffer(buf)
	review, code, err := readReview(r, buf)
	if err != nil {
		wh.log.Error(err, "unable to read the admission request")
		wh.write(w, metav1.TypeMeta{}, admission.Errored(code, err).AdmissionResponse)
		return
	}
	gvk := review.TypeMeta
	if gvk.APIVersion == "" && gvk.Kind == "" {
		gvk = metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"}
	}
	wh.write(w, gvk, wh.answer(r.Context(), &review.Request))
}

// WithRecoverPanic sets whether a panic while answering is answered with an error (the default) or
// left to crash the test that provoked it.
func (wh *Webhook) WithRecoverPanic(recover bool) *Webhook {
	wh.recoverPanic = recover
	return wh
}

// admissionReview is an AdmissionReview as the webhook reads it.
type admissionReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         admissionRequest `json:"request"`
}

// admissionRequest is an AdmissionRequest with the pod decoded, and its JSON as sent (raw), from
// which the answer's patch starts.
type admissionRequest struct {
	admissionv1.AdmissionRequest `json:",inline"`
	// Object stands in for AdmissionRequest.Object, which it hides from the decoder.
	Object corev1.Pod `json:"object"`
	raw    []byte
}

// readReview reads the AdmissionReview of r into buf and decodes it; the request's raw pod stays in
// buf. On error, code is the HTTP status of the answer.
func readReview(r *http.Request, buf *bytes.Buffer) (_ *admissionReview, code int32, _ error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, http.StatusBadRequest, errors.New("request body is empty")
	}
	defer r.Body.Close()
	// Room for the body the request announces, and to find its end without growing.
	size := r.ContentLength
	if size < 0 || size > maxReview {
		size = 0
	}
	buf.Grow(int(size) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, maxReview+1)); err != nil {
		return nil, http.StatusBadRequest, err
	}
	body := buf.Bytes()
	if len(body) > maxReview {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", maxReview)
	}
	if contentType := r.Header.Get("Content-Type"); contentType != "application/json" {
		return nil, http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", contentType)
	}
	var out admissionReview
	if err := utiljson.Unmarshal(body, &out); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decode the admission review: %w", err)
	}
	if _, err := schema.ParseGroupVersion(out.APIVersion); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decode the admission review: %w", err)
	}
	// The pod's JSON, for the patch: the decoder merges the members of a key given twice, so that the
	// pod decoded would not be the JSON of either; the API server never sends one.
	request, err := onlyMember(body, "request")
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	if request != nil && request[0] == '{' {
		if out.Request.raw, err = onlyMember(request, "object"); err != nil {
			return nil, http.StatusBadRequest, err
		}
	}
	return &out, 0, nil
}

// buffers lends the webhook the buffers it reads a request into and marshals a pod into, so that an
// admission allocates neither; one grown past maxPooled is left to the garbage collector.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooled = 64 << 10

// getBuffer returns an empty buffer from buffers, putBuffer gives it back when nothing refers to its
// bytes any more.
func getBuffer() *bytes.Buffer {
	b := buffers.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooled {
		buffers.Put(b)
	}
}

// onlyMember returns the value of the member key of the JSON object d, nil when it has none; a key
// given twice is an error.
func onlyMember(d []byte, key string) ([]byte, error) {
	members, err := appendMembers(nil, trimSpace(d))
	if err != nil {
		return nil, err
	}
	var value []byte
	for _, m := range members {
		if string(m.key) != key {
			continue
		}
		if value != nil {
			return nil, fmt.Errorf("the admission review gives %q twice", key)
		}
		value = m.value
	}
	return value, nil
}

// answer is the webhook's answer to req, with the request's UID and a status code, as
// controller-runtime completes an answer.
func (wh *Webhook) answer(ctx context.Context, req *admissionRequest) (resp admissionv1.AdmissionResponse) {
	defer func() {
		if r := recover(); r != nil {
			admissionmetrics.WebhookPanics.WithLabelValues().Inc()
			if !wh.recoverPanic {
				panic(r)
			}
			for _, fn := range utilruntime.PanicHandlers {
				fn(ctx, r)
			}
			resp = admission.Errored(http.StatusInternalServerError, fmt.Errorf("panic: %v [recovered]", r)).AdmissionResponse
		}
		resp.UID = req.UID
		if resp.Result == nil {
			resp.Result = &metav1.Status{}
		}
		if resp.Result.Code == 0 {
			resp.Result.Code = http.StatusOK
		}
	}()
	return wh.handle(req).AdmissionResponse
}

// write writes an AdmissionReview with resp, of kind gvk.
func (wh *Webhook) write(w http.ResponseWriter, gvk metav1.TypeMeta, resp admissionv1.AdmissionResponse) {
	if err := json.NewEncoder(w).Encode(admissionv1.AdmissionReview{TypeMeta: gvk, Response: &resp}); err != nil {
		wh.log.Error(err, "unable to write the admission response")
	}
}
