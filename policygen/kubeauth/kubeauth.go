// Package kubeauth asks the Kubernetes API server who a request's bearer token belongs to
// (TokenReview) and what they may do (SubjectAccessReview), through k8s.io/apiserver's delegating
// authenticator and authorizer: the same code an aggregated API server or controller-runtime's
// authenticated metrics endpoint runs, with its bounded, single-flight answer caches.
//
// policygen keeps one Reviewer for the policy API (projected tokens of audience podwall) and the web
// UI (tokens of the API server's own audiences, as kubectl uses), so both share one cache.
package kubeauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes"
)

// Options configure a Reviewer; zero values take the defaults in parentheses.
type Options struct {
	// TokenTTL is how long the API server's answer about a token, accepted or refused, is reused per
	// token and audience (1m): a deleted service account's token works at most that long.
	TokenTTL time.Duration
	// AccessTTL is how long a SubjectAccessReview answer, allowed or not, is reused per user and
	// question (30s): a granted or revoked permission takes effect within it.
	AccessTTL time.Duration
	// Timeout bounds one review call to the API server (10s); calls that fail transiently (timeouts,
	// 429, 5xx, reset connections) are retried a few times, half a second apart and growing.
	Timeout time.Duration
}

// ErrNoToken is a request without a bearer token; ErrRefused a token the API server does not accept
// for the audiences asked. Any other error means the API server could not be asked: retry later.
var (
	ErrNoToken = errors.New("no bearer token")
	ErrRefused = errors.New("the API server does not accept this token")
)

// Reviewer authenticates and authorizes callers by asking the API server.
type Reviewer struct {
	authn authenticator.Request
	authz authorizer.Authorizer
}

// New returns a Reviewer whose reviews cs creates (it needs RBAC to create tokenreviews and
// subjectaccessreviews).
func New(cs kubernetes.Interface, opts Options) (*Reviewer, error) {
	opts.TokenTTL = cmp.Or(opts.TokenTTL, time.Minute)
	opts.AccessTTL = cmp.Or(opts.AccessTTL, 30*time.Second)
	opts.Timeout = cmp.Or(opts.Timeout, 10*time.Second)
	backoff := webhook.DefaultRetryBackoffWithInitialDelay(500 * time.Millisecond)
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		// APIAudiences stays empty: it is the audience assumed when a review answers without one, which
		// per the TokenReview API means the API server's own audiences. A caller's audiences are asked
		// for per request instead (Authenticate), and an answer must name one of them.
		TokenAccessReviewClient:  cs.AuthenticationV1(),
		TokenAccessReviewTimeout: opts.Timeout,
		WebhookRetryBackoff:      &backoff,
		CacheTTL:                 opts.TokenTTL,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("token authenticator: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: cs.AuthorizationV1(),
		AllowCacheTTL:             opts.AccessTTL,
		DenyCacheTTL:              opts.AccessTTL,
		WebhookRetryBackoff:       &backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("access authorizer: %w", err)
	}
	return &Reviewer{authn: authn, authz: authz}, nil
}

// Authenticate returns the user the request's bearer token belongs to, as a TokenReview for
// audiences answers it (for the API server's own audiences when none are given). Errors: ErrNoToken,
// ErrRefused (wrapped with the API server's reason), or any other when the API server cannot be asked.
func (rv *Reviewer) Authenticate(r *http.Request, audiences ...string) (user.Info, error) {
	ctx := r.Context()
	if len(audiences) > 0 {
		ctx = authenticator.WithAudiences(ctx, audiences)
	}
	// Only the Authorization header is offered: the authenticator would also take a token from a
	// WebSocket subprotocol, and it deletes the header it accepted, which a second check of the same
	// request must still find.
	probe := (&http.Request{Header: http.Header{"Authorization": r.Header.Values("Authorization")}}).WithContext(ctx)
	resp, ok, err := rv.authn.AuthenticateRequest(probe)
	switch {
	case ok:
		return resp.User, nil
	case err == nil:
		return nil, ErrNoToken
	case unanswered(err):
		return nil, fmt.Errorf("token review: %w", err)
	default:
		return nil, fmt.Errorf("%w (audiences %q): %v", ErrRefused, audiences, err)
	}
}

// unanswered tells a review that could not be made (the API server unreachable, failing, refusing
// policygen or too slow) from its answer that the token is not valid, which the authenticator
// reports as a plain error with the API server's reason.
func unanswered(err error) bool {
	if agg, ok := errors.AsType[utilerrors.Aggregate](err); ok {
		return slices.ContainsFunc(agg.Errors(), unanswered)
	}
	var status apierrors.APIStatus
	_, transport := errors.AsType[*url.Error](err)
	return errors.As(err, &status) || transport || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// Allowed reports whether the API server's authorizers allow what attrs describe (attrs names the
// user, usually one Authenticate returned). An error means the API server could not be asked.
func (rv *Reviewer) Allowed(ctx context.Context, attrs authorizer.Attributes) (bool, error) {
	decision, _, err := rv.authz.Authorize(ctx, attrs)
	if err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	return decision == authorizer.DecisionAllow, nil
}
