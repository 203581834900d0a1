package netpolsync

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// verbs are what the syncer does with NetworkPolicies, in every namespace.
var verbs = []string{"get", "list", "watch", "create", "update", "delete"}

// CheckAccess asks the API server whether policygen may do what the sync does with NetworkPolicies,
// and says which right is missing and where it is granted: without it the sync's informer would wait
// for a list it is refused, and the leader's controllers with it.
func CheckAccess(ctx context.Context, reviews authorizationclient.SelfSubjectAccessReviewsGetter) error {
	var missing []string
	for _, verb := range verbs {
		r, err := reviews.SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verb, Group: "networking.k8s.io", Resource: "networkpolicies"}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("networkpolicy sync: review access to networkpolicies: %w", err)
		}
		if !r.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("networkpolicy sync: policygen may not %s networkpolicies.networking.k8s.io in every namespace: grant it (manifests/overlays/networkpolicy-sync/rbac.yaml) or turn networkpolicy-sync off",
			strings.Join(missing, ", "))
	}
	return nil
}
