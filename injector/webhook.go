package injector

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
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
func (in *Injector) Webhook(route Namespace) *admission.Webhook {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme) // registering the built-in types cannot fail
	wh := admission.WithDefaulter[*corev1.Pod](scheme, defaulter{in: in, route: route})
	wh.Handler = warningHandler{wh.Handler}
	return wh
}

// defaulter is the typed defaulter controller-runtime calls with the decoded pod; it computes the
// JSON patch from the pod as Default leaves it.
type defaulter struct {
	in    *Injector
	route Namespace
}

// Default injects the pod of a CREATE request, and drops NET_RAW from the ephemeral containers an
// UPDATE of pods/ephemeralcontainers adds to an injected pod. The namespace comes from the request: a
// pod being created may not carry it yet.
func (d defaulter) Default(ctx context.Context, pod *corev1.Pod) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	ns := d.route
	ns.Name = cmp.Or(pod.Namespace, req.Namespace)
	switch {
	case req.Operation == admissionv1.Create && req.SubResource == "":
		warnings, err := d.in.Inject(pod, ns)
		addWarnings(ctx, warnings...)
		return err
	case req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers":
		var old corev1.Pod
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return fmt.Errorf("decode the pod before the update: %w", err)
		}
		dropEphemeralNetRaw(pod, &old, ns)
	}
	return nil
}

// warningsKey carries a *warningList from warningHandler to the defaulter, whose interface returns
// only an error.
type warningsKey struct{}

type warningList struct {
	mu    sync.Mutex
	items []string
}

func addWarnings(ctx context.Context, w ...string) {
	if list, ok := ctx.Value(warningsKey{}).(*warningList); ok && len(w) > 0 {
		list.mu.Lock()
		list.items = append(list.items, w...)
		list.mu.Unlock()
	}
}

// warningHandler puts the warnings the defaulter collected into the response, denied or not.
type warningHandler struct {
	next admission.Handler
}

func (h warningHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	list := &warningList{}
	resp := h.next.Handle(context.WithValue(ctx, warningsKey{}, list), req)
	list.mu.Lock()
	defer list.mu.Unlock()
	return resp.WithWarnings(list.items...)
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
