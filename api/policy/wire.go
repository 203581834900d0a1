package policy

// The policy API's paths, headers and limits (API.md beside this file describes the protocol).
const (
	// PolicyPath is the long-poll of the caller's resolved policy (GET).
	PolicyPath = "/v1/policy"
	// ReportsPath takes the connections a sidecar observed (POST).
	ReportsPath = "/v1/reports"
	// HeaderRevision carries the served policy's revision beside its ETag.
	HeaderRevision = "X-Podwall-Revision"
	// TokenAudience is the audience of the projected service-account token a sidecar presents.
	TokenAudience = "podwall"
	// MaxPolicyBytes bounds a policy document: 64 MiB holds a policy of well over a million peers.
	MaxPolicyBytes = 64 << 20
)
