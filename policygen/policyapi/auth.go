package policyapi

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/workload"
)

// errUnauthenticated is a valid token that is not a pod's (401); errForbidden a pod's token that
// does not lead to a live pod (403).
var (
	errUnauthenticated = errors.New("unauthenticated")
	errForbidden       = errors.New("forbidden")
)

// Identity is who is calling: a pod and its workload.
type Identity struct {
	Pod      types.NamespacedName
	UID      types.UID
	Workload workload.Key
}

// authenticator maps a projected service-account token to the pod it is bound to. The API server
// reviews the token (its answer reused per kubeauth.Options.TokenTTL); the pod is looked up in the
// cache on every call, so a deleted pod's token stops working at once. Its workload is the verified one
// (workload.Of): owners read from the cache and, when it does not have them yet, from api; a pod whose
// claimed owner is refused is served, and reports, as the bare pod it is (Pod/<name>), and one whose
// owners cannot be read now is answered 503, to retry.
type authenticator struct {
	reviewer *kubeauth.Reviewer
	reader   client.Reader
	api      client.Reader
	audience string
}

func (a *authenticator) authenticate(r *http.Request) (Identity, error) {
	u, err := a.reviewer.Authenticate(r, a.audience)
	if err != nil {
		return Identity{}, err
	}
	ns, account, err := serviceaccount.SplitUsername(u.GetName())
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %q is not a service account", errUnauthenticated, u.GetName())
	}
	name, uid := u.GetExtra()[serviceaccount.PodNameKey], u.GetExtra()[serviceaccount.PodUIDKey]
	if len(name) != 1 || len(uid) != 1 {
		return Identity{}, fmt.Errorf("%w: token is not bound to a pod", errUnauthenticated)
	}
	key := types.NamespacedName{Namespace: ns, Name: name[0]}
	var pod corev1.Pod
	if err := a.reader.Get(r.Context(), key, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return Identity{}, fmt.Errorf("%w: pod %s does not exist", errForbidden, key)
		}
		return Identity{}, fmt.Errorf("get pod %s: %w", key, err)
	}
	if pod.UID != types.UID(uid[0]) {
		return Identity{}, fmt.Errorf("%w: pod %s is gone", errForbidden, key)
	}
	if sa := cmp.Or(pod.Spec.ServiceAccountName, "default"); sa != account {
		return Identity{}, fmt.Errorf("%w: token of service account %s, pod runs as %s", errForbidden, account, sa)
	}
	wl, err := workload.Of(r.Context(), a.reader, a.api, &pod)
	if err != nil {
		return Identity{}, err // not knowing the owners is no refusal of them: the sidecar retries
	}
	return Identity{Pod: key, UID: pod.UID, Workload: wl}, nil
}
