package injector

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The webhook's paths: the MutatingWebhookConfiguration sends strict namespaces to PathStrict, the
// others to PathInject, and either, when the namespace enforces a Pod Security level the injected pod
// cannot meet, to the path with "-enforce-<level>" appended (see routes).
const (
	PathInject = "/inject"
	PathStrict = "/inject-strict"
)

// routes maps each of the webhook's paths to what the namespaceSelector of the webhook that calls it
// says about the namespace. So the injector learns the namespace's labels from the request alone,
// without reading namespaces.
func routes() map[string]Namespace {
	out := map[string]Namespace{}
	for path, strict := range map[string]bool{PathInject: false, PathStrict: true} {
		out[path] = Namespace{Strict: strict}
		for _, level := range unmetLevels {
			out[path+"-enforce-"+level] = Namespace{Strict: strict, Enforce: level}
		}
	}
	return out
}

// Register serves the injector's paths on srv, each request timed in the webhook's own latency
// histogram (requestDuration), which it registers on reg.
func Register(srv webhook.Server, in *Injector, reg prometheus.Registerer) {
	latency := requestDuration()
	reg.MustRegister(latency)
	for path, route := range routes() {
		srv.Register(path, timed(latency.WithLabelValues(path), in.Webhook(route)))
	}
}

// Webhook returns the admission webhook for the namespaces route describes (all but its Name, which
// each request brings).
func (in *Injector) Webhook(route Namespace) *Webhook {
	return &Webhook{in: in, route: route, recoverPanic: true, log: ctrllog.Log.WithName("admission")}
}

// Webhook answers one path's admission requests (ServeHTTP). It has mutate change the pod and
// answers with the JSON patch from the pod as the API server sent it to the pod as changed (as
// controller-runtime's typed defaulters do, computed by diffJSON), and with the warnings mutate
// gave, denied or not.
type Webhook struct {
	in           *Injector
	route        Namespace
	recoverPanic bool
	log          logr.Logger
}

func (wh *Webhook) handle(req *admissionRequest) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, Result: &metav1.Status{Code: http.StatusOK}}}
	}
	pod := &req.Object
	if err := checkPod(req.raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	// mutate changes a copy of the pod and puts it in place, so the pod's slices, maps and pointers
	// stay as decoded: a shallow copy is the pod as the API server sent it.
	original := *pod
	warnings, err := wh.mutate(req, pod)
	if err != nil {
		var apiStatus apierrors.APIStatus
		if errors.As(err, &apiStatus) {
			return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Result: new(apiStatus.Status())}}.WithWarnings(warnings...)
		}
		return admission.Denied(err.Error()).WithWarnings(warnings...)
	}
	if reflect.DeepEqual(&original, pod) {
		return admission.Allowed("").WithWarnings(warnings...)
	}
	current := getBuffer()
	defer putBuffer(current)
	if err := json.NewEncoder(current).Encode(pod); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	patch, err := podPatch(req.raw, current.Bytes(), &original)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	resp := admission.Allowed("").WithWarnings(warnings...)
	if patch != nil {
		resp.Patch, resp.PatchType = patch, new(admissionv1.PatchTypeJSONPatch)
	}
	return resp
}

// checkPod checks that the request carries a pod, raw as sent and decoded: its apiVersion and kind,
// when given, must be v1 and Pod. The webhook sees pods only.
func checkPod(raw []byte, pod *corev1.Pod) error {
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("the request carries no pod")
	}
	if (pod.APIVersion != "" && pod.APIVersion != "v1") || (pod.Kind != "" && pod.Kind != "Pod") {
		return fmt.Errorf("the object is a %s of %s, not a v1 Pod", pod.Kind, pod.APIVersion)
	}
	return nil
}

// podPatch is the JSON patch from raw, the pod the API server sent, to current, the pod as mutate
// left it, without the removals that decoding alone makes (a field podwall's API types do not know,
// an empty field they omit): the API server keeps those. original is the pod as decoded. It is nil
// when nothing is left to change.
func podPatch(raw, current []byte, original *corev1.Pod) ([]byte, error) {
	ops, err := diffJSON(raw, current)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(ops, func(o patchOp) bool { return o.op == "remove" }) {
		decoded, err := json.Marshal(original)
		if err != nil {
			return nil, err
		}
		dropped, err := diffJSON(raw, decoded)
		if err != nil {
			return nil, err
		}
		ops = slices.DeleteFunc(ops, func(o patchOp) bool {
			return o.op == "remove" && slices.ContainsFunc(dropped, func(d patchOp) bool { return d.op == "remove" && d.path == o.path })
		})
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return encodePatch(ops)
}

// mutate injects the pod of a CREATE request, and drops NET_RAW from the ephemeral containers an
// UPDATE of pods/ephemeralcontainers adds to an injected pod; it returns warnings for the client. An
// error denies the request. The namespace comes from the request: a pod being created may not carry
// it yet. Either way it changes a copy of the pod and puts that in place.
func (wh *Webhook) mutate(req *admissionRequest, pod *corev1.Pod) ([]string, error) {
	ns := wh.route
	ns.Name = cmp.Or(pod.Namespace, req.Namespace)
	switch {
	case req.Operation == admissionv1.Create && req.SubResource == "":
		return wh.in.Inject(pod, ns)
	case req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers":
		var old corev1.Pod
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return nil, fmt.Errorf("decode the pod before the update: %w", err)
		}
		work := pod.DeepCopy()
		dropEphemeralNetRaw(work, &old, ns)
		*pod = *work
	}
	return nil, nil
}

// requestDuration is the webhook's latency histogram, podwall_injector_request_duration_seconds, per
// path, from the request's arrival to the response written. Its buckets are fine below 10 ms, the
// budget a pod create can afford.
func requestDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podwall_injector_request_duration_seconds",
		Help:    "Time to answer an admission request, by path.",
		Buckets: []float64{.0002, .0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, 1},
	}, []string{"path"})
}

// timed observes each request's duration in observer.
func timed(observer prometheus.Observer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		observer.Observe(time.Since(start).Seconds())
	})
}
