package ui

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	v1 "podwall.io/podwall/api/v1alpha1"
)

// errNoToken and errBadToken answer 401.
var (
	errNoToken  = errors.New("no bearer token: paste one (kubectl create token <service-account>) or sign in through the proxy")
	errBadToken = errors.New("the API server does not accept this token")
)

// caller is an authenticated user, as a SubjectAccessReview names one.
type caller struct {
	User   string
	UID    string
	Groups []string
	Extra  map[string]authzv1.ExtraValue
}

// access authenticates callers with TokenReview (the API server's default audiences: a token kubectl
// would use) and asks the API server what they may do. Answers are reused for ttl per token and
// question, so that a page's requests do not each cost a review.
type access struct {
	reviews authnclient.TokenReviewInterface
	sars    authzclient.SubjectAccessReviewInterface
	ttl     time.Duration
	now     func() time.Time

	mu      sync.Mutex
	callers map[[32]byte]cached[caller]
	allowed map[question]cached[bool]
}

type cached[T any] struct {
	v       T
	expires time.Time
}

type question struct {
	token               [32]byte
	verb, namespace, id string
}

// maxCached bounds each cache; past it the cache is cleared.
const maxCached = 10000

func newAccess(reviews authnclient.TokenReviewInterface, sars authzclient.SubjectAccessReviewInterface, ttl time.Duration) *access {
	return &access{reviews: reviews, sars: sars, ttl: ttl, now: time.Now,
		callers: map[[32]byte]cached[caller]{}, allowed: map[question]cached[bool]{}}
}

// tokenOf is the request's bearer token.
func tokenOf(r *http.Request) (string, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return "", errNoToken
	}
	return strings.TrimSpace(token), nil
}

// may reports whether the request's caller may do verb on the WorkloadPolicy namespace/name (all of
// them when both are empty).
func (a *access) may(r *http.Request, verb, namespace, name string) (bool, error) {
	token, err := tokenOf(r)
	if err != nil {
		return false, err
	}
	key := sha256.Sum256([]byte(token))
	q := question{token: key, verb: verb, namespace: namespace, id: name}
	now := a.now()
	a.mu.Lock()
	hit, ok := a.allowed[q]
	a.mu.Unlock()
	if ok && now.Before(hit.expires) {
		return hit.v, nil
	}
	c, err := a.authenticate(r.Context(), key, token)
	if err != nil {
		return false, err
	}
	yes, err := a.review(r.Context(), c, verb, namespace, name)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	if len(a.allowed) >= maxCached {
		clear(a.allowed)
	}
	a.allowed[q] = cached[bool]{v: yes, expires: now.Add(a.ttl)}
	a.mu.Unlock()
	return yes, nil
}

// who names the request's caller for the log, once may has authenticated them.
func (a *access) who(r *http.Request) string {
	token, err := tokenOf(r)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.callers[sha256.Sum256([]byte(token))].v.User
}

func (a *access) authenticate(ctx context.Context, key [32]byte, token string) (caller, error) {
	now := a.now()
	a.mu.Lock()
	hit, ok := a.callers[key]
	a.mu.Unlock()
	if ok && now.Before(hit.expires) {
		return hit.v, nil
	}
	tr, err := a.reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return caller{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return caller{}, errBadToken
	}
	u := tr.Status.User
	c := caller{User: u.Username, UID: u.UID, Groups: u.Groups, Extra: map[string]authzv1.ExtraValue{}}
	for k, v := range u.Extra {
		c.Extra[k] = authzv1.ExtraValue(v)
	}
	a.mu.Lock()
	if len(a.callers) >= maxCached {
		clear(a.callers)
	}
	a.callers[key] = cached[caller]{v: c, expires: now.Add(a.ttl)}
	a.mu.Unlock()
	return c, nil
}

func (a *access) review(ctx context.Context, c caller, verb, namespace, name string) (bool, error) {
	sar, err := a.sars.Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: c.User, UID: c.UID, Groups: c.Groups, Extra: c.Extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Group: v1.GroupVersion.Group, Version: v1.GroupVersion.Version,
			Resource: "workloadpolicies", Verb: verb, Namespace: namespace, Name: name},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	return sar.Status.Allowed, nil
}
