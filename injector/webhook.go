package injector

import (
	"context"
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

// The webhook's paths: the MutatingWebhookConfiguration sends strict namespaces to PathStrict.
const (
	PathInject = "/inject"
	PathStrict = "/inject-strict"
)

// Register serves the injector's two paths on srv, each request timed in the webhook's own latency
// histogram, which it registers on reg: podwall_injector_request_duration_seconds, per path, from the
// request's arrival to the response written. Its buckets are fine below 10 ms, the budget a pod
// create can afford.
func Register(srv webhook.Server, in *Injector, reg prometheus.Registerer) {
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "podwall_injector_request_duration_seconds",
		Help:    "Time to answer an admission request, by path.",
		Buckets: []float64{.0002, .0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, 1},
	}, []string{"path"})
	reg.MustRegister(latency)
	for path, strict := range map[string]bool{PathInject: false, PathStrict: true} {
		srv.Register(path, timed(latency.WithLabelValues(path), in.Webhook(strict)))
	}
}

// Webhook returns the admission webhook for namespaces that are strict or not.
func (in *Injector) Webhook(strict bool) *admission.Webhook {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme) // registering the built-in types cannot fail
	wh := admission.WithDefaulter[*corev1.Pod](scheme, defaulter{in: in, strict: strict})
	wh.Handler = warningHandler{wh.Handler}
	return wh
}

// defaulter is the typed defaulter controller-runtime calls with the decoded pod; it computes the
// JSON patch from the pod as Default leaves it.
type defaulter struct {
	in     *Injector
	strict bool
}

// Default injects the pod of a CREATE request. The namespace comes from the request: a pod being
// created may not carry it yet.
func (d defaulter) Default(ctx context.Context, pod *corev1.Pod) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	if req.Operation != admissionv1.Create {
		return nil
	}
	ns := pod.Namespace
	if ns == "" {
		ns = req.Namespace
	}
	warnings, err := d.in.Inject(pod, Namespace{Name: ns, Strict: d.strict})
	addWarnings(ctx, warnings...)
	return err
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

// timed observes each request's duration in observer.
func timed(observer prometheus.Observer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		observer.Observe(time.Since(start).Seconds())
	})
}
