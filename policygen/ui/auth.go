package ui

import (
	"errors"
	"net/http"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/kubeauth"
)

// errNoToken and errBadToken answer 401.
var (
	errNoToken  = errors.New("no bearer token: paste one (kubectl create token <service-account>) or sign in through the proxy")
	errBadToken = errors.New("the API server does not accept this token")
)

// may reports whether the request's caller may do verb on the WorkloadPolicy namespace/name (all of
// them when both are empty), and who they are. The token is reviewed for the API server's own
// audiences (one kubectl would use), unlike a sidecar's.
func (s *Server) may(r *http.Request, verb, namespace, name string) (user.Info, bool, error) {
	u, err := s.reviewer.Authenticate(r)
	switch {
	case errors.Is(err, kubeauth.ErrNoToken):
		return nil, false, errNoToken
	case errors.Is(err, kubeauth.ErrRefused):
		return nil, false, errBadToken
	case err != nil:
		return nil, false, err
	}
	yes, err := s.reviewer.Allowed(r.Context(), authorizer.AttributesRecord{User: u, Verb: verb,
		Namespace: namespace, Name: name, APIGroup: v1.GroupVersion.Group, APIVersion: v1.GroupVersion.Version,
		Resource: "workloadpolicies", ResourceRequest: true})
	return u, yes, err
}

// allowed asks whether the caller may do verb, writing the error response when not; it returns the
// caller's user name.
func (s *Server) allowed(w http.ResponseWriter, r *http.Request, verb, namespace, name string) (string, bool) {
	u, yes, err := s.may(r, verb, namespace, name)
	switch {
	case errors.Is(err, errNoToken), errors.Is(err, errBadToken):
		writeError(w, http.StatusUnauthorized, err.Error())
	case err != nil:
		s.log.Error(err, "check access")
		writeError(w, http.StatusServiceUnavailable, "cannot check access now, retry")
	case !yes:
		what := "list WorkloadPolicies"
		if name != "" {
			what = verb + " WorkloadPolicy " + namespace + "/" + name
		}
		writeError(w, http.StatusForbidden, "your Kubernetes permissions do not let you "+what)
	default:
		return u.GetName(), true
	}
	return "", false
}
