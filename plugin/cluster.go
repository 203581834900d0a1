package plugin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/policygen/ui"
)

// Names of what `kubectl apply -k manifests/` installs, as policygen's defaults name them: its Service
// (whose port apiPort serves the policy API and the UI) and the ConfigMap where it publishes its CA
// bundle.
const (
	serviceName = "podwall-policygen"
	caConfigMap = "podwall-policygen-ca"
	apiPort     = ui.APIPort
)

// serverName is the first DNS name policygen's managed certificate carries in namespace ns (the
// Service's, name.namespace.svc), by which the proxy verifies it.
func serverName(ns string) string {
	return certs.Serving{Namespace: ns, Service: serviceName}.Hosts()[0]
}

// target is the policygen pod to forward to and the container port that serves the UI.
type target struct {
	pod  string
	port int32
}

// findPolicygen picks a Ready pod behind policygen's Service in ns and resolves the Service's
// targetPort for apiPort on it.
func findPolicygen(ctx context.Context, cs kubernetes.Interface, ns string) (target, error) {
	svc, err := cs.CoreV1().Services(ns).Get(ctx, serviceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return target{}, fmt.Errorf("podwall is not installed in namespace %s: it has no Service %s (install podwall with kubectl apply -k manifests/, or name its namespace with --podwall-namespace)", ns, serviceName)
	case err != nil:
		return target{}, explain(err, "get", "services", ns)
	}
	var port *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == apiPort {
			port = &svc.Spec.Ports[i]
		}
	}
	if port == nil || len(svc.Spec.Selector) == 0 {
		return target{}, fmt.Errorf("the Service %s/%s has no port %d with a pod selector: is it podwall's?", ns, serviceName, apiPort)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return target{}, explain(err, "list", "pods", ns)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podReady(pod) {
			continue
		}
		if p, ok := containerPort(pod, port.TargetPort); ok {
			return target{pod: pod.Name, port: p}, nil
		}
	}
	return target{}, fmt.Errorf("no policygen pod is ready in namespace %s (%d found; see kubectl -n %s get pods -l %s)",
		ns, len(pods.Items), ns, labels.SelectorFromSet(svc.Spec.Selector))
}

func podReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// containerPort resolves a Service's targetPort on pod: a number is itself (the Service's port when
// unset), a name is the TCP container port of that name.
func containerPort(pod *corev1.Pod, target intstr.IntOrString) (int32, bool) {
	if target.Type == intstr.Int {
		if target.IntVal == 0 {
			return apiPort, true
		}
		return target.IntVal, true
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == target.StrVal && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// policygenCA reads the CA bundle policygen publishes in ns.
func policygenCA(ctx context.Context, cs kubernetes.Interface, ns string) (*x509.CertPool, error) {
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, caConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s has no ConfigMap %s, where policygen publishes the CA of its certificate: is policygen running with cert-mode=managed?", ns, caConfigMap)
	case err != nil:
		return nil, explain(err, "get", "configmaps", ns)
	}
	return certs.PublishedCA(cm)
}

// access is one permission the command needs.
type access struct {
	verb, resource, subresource, namespace, name string
}

func (a access) String() string {
	return fmt.Sprintf("%s %s in namespace %s", a.verb, a.object(" "), a.namespace)
}

// object is the resource, its subresource and the object's name, the name after sep.
func (a access) object(sep string) string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.name != "" {
		r += sep + a.name
	}
	return r
}

// mayAll asks the API server (SelfSubjectAccessReview) whether the user has each permission command
// needs, so that a missing one is named before anything fails half-way; the first missing one is the
// error.
func mayAll(ctx context.Context, cs kubernetes.Interface, command string, needs ...access) error {
	for _, a := range needs {
		review, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("ask the API server what you may do: %w", err)
		}
		if !review.Status.Allowed {
			return fmt.Errorf("your Kubernetes permissions do not let you %s, which %s needs (check: kubectl auth can-i %s)", a, command, a.canI())
		}
	}
	return nil
}

// canI is the permission as `kubectl auth can-i` takes it; no namespace is every namespace (-A).
func (a access) canI() string {
	if a.namespace == "" {
		return fmt.Sprintf("%s %s -A", a.verb, a.object("/"))
	}
	return fmt.Sprintf("%s %s -n %s", a.verb, a.object("/"), a.namespace)
}

// explain turns a Forbidden answer into a message naming the missing permission.
func explain(err error, verb, resource, ns string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("your Kubernetes permissions do not let you %s: %w", access{verb: verb, resource: resource, namespace: ns}, err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return fmt.Errorf("%s %s in namespace %s: %w", verb, resource, ns, err)
	}
	return fmt.Errorf("reach the API server: %w", err)
}
