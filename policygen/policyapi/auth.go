package policyapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/workload"
)

// The user extras the API server sets on a token bound to a pod.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// errUnauthenticated is a token the API server does not accept for the audience (401); errForbidden a
// valid token that does not lead to a live pod (403).
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

// authenticator checks projected service-account tokens with TokenReview and maps them to the pod they
// are bound to. Reviews are cached for ttl per token; the pod is looked up in the cache on every call,
// so a deleted pod's token stops working at once.
type authenticator struct {
	reviews  authnclient.TokenReviewInterface
	reader   client.Reader
	audience string
	ttl      time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]review
}

type review struct {
	pod     types.NamespacedName
	uid     types.UID
	account string
	err     error
	expires time.Time
}

// maxCachedReviews bounds the review cache; past it the cache is cleared (sidecars re-review at most
// once per ttl, so this only bounds memory under a flood of distinct tokens).
const maxCachedReviews = 20000

func (a *authenticator) authenticate(ctx context.Context, token string) (Identity, error) {
	rv, err := a.review(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	var pod corev1.Pod
	if err := a.reader.Get(ctx, rv.pod, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return Identity{}, fmt.Errorf("%w: pod %s does not exist", errForbidden, rv.pod)
		}
		return Identity{}, fmt.Errorf("get pod %s: %w", rv.pod, err)
	}
	if pod.UID != rv.uid {
		return Identity{}, fmt.Errorf("%w: pod %s is gone", errForbidden, rv.pod)
	}
	if sa := cmp.Or(pod.Spec.ServiceAccountName, "default"); sa != rv.account {
		return Identity{}, fmt.Errorf("%w: token of service account %s, pod runs as %s", errForbidden, rv.account, sa)
	}
	k, err := workload.Of(ctx, a.reader, &pod)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Pod: rv.pod, UID: rv.uid, Workload: k}, nil
}

// review returns the token's pod binding, from the cache or a TokenReview.
func (a *authenticator) review(ctx context.Context, token string) (review, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	rv, ok := a.cache[key]
	a.mu.Unlock()
	if !ok || now.After(rv.expires) {
		rv = a.tokenReview(ctx, token)
		if errors.Is(rv.err, errUnauthenticated) || rv.err == nil {
			rv.expires = now.Add(a.ttl)
			a.mu.Lock()
			if len(a.cache) >= maxCachedReviews {
				clear(a.cache)
			}
			a.cache[key] = rv
			a.mu.Unlock()
		}
	}
	return rv, rv.err
}

func (a *authenticator) tokenReview(ctx context.Context, token string) review {
	tr, err := a.reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{
		Token: token, Audiences: []string{a.audience},
	}}, metav1.CreateOptions{})
	if err != nil {
		return review{err: fmt.Errorf("token review: %w", err)}
	}
	st := tr.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, a.audience) {
		return review{err: fmt.Errorf("%w: token not valid for audience %q: %s", errUnauthenticated, a.audience, st.Error)}
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return review{err: fmt.Errorf("%w: %q is not a service account", errUnauthenticated, st.User.Username)}
	}
	name, uid := st.User.Extra[extraPodName], st.User.Extra[extraPodUID]
	if len(name) != 1 || len(uid) != 1 {
		return review{err: fmt.Errorf("%w: token is not bound to a pod", errUnauthenticated)}
	}
	return review{pod: types.NamespacedName{Namespace: parts[2], Name: name[0]}, uid: types.UID(uid[0]), account: parts[3]}
}
