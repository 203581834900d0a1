package policy

import (
	"fmt"
	"strings"
)

// The policy API's paths, headers and limits (API.md beside this file describes the protocol).
const (
	// PolicyPath is the long-poll of the caller's resolved policy (GET).
	PolicyPath = "/v1/policy"
	// ReportsPath takes the connections a sidecar observed (POST).
	ReportsPath = "/v1/reports"
	// HeaderRevision carries the served policy's revision beside its ETag.
	HeaderRevision = "X-Podwall-Revision"
	// HeaderVersion carries the sidecar's version (podwall's internal/version) on each of its
	// requests, polls as well as reports, so that policygen knows which version every subscriber
	// runs from its first poll on, whichever replica it reaches (SidecarVersion reads it).
	HeaderVersion = "X-Podwall-Version"
	// TokenAudience is the audience of the projected service-account token a sidecar presents.
	TokenAudience = "podwall"
	// MaxPolicyBytes bounds a policy document: 64 MiB holds a policy of well over a million peers.
	MaxPolicyBytes = 64 << 20
)

// The versions SidecarVersion gives a sidecar that sends none, and MaxVersion bounds one: the length
// of an image tag.
const (
	UnknownVersion = "unknown"
	MaxVersion     = 128
)

// SidecarVersion reads a sidecar's HeaderVersion: UnknownVersion when it sends none (sidecars
// older than the header), and an error for a value that could not be an image tag (at most
// MaxVersion letters, digits, '.', '_', '+' and '-').
func SidecarVersion(header string) (string, error) {
	if header == "" {
		return UnknownVersion, nil
	}
	valid := len(header) <= MaxVersion
	for _, c := range header {
		valid = valid && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+-", c))
	}
	if !valid {
		return "", fmt.Errorf("%s: want a version of at most %d letters, digits, '.', '_', '+' and '-'", HeaderVersion, MaxVersion)
	}
	return header, nil
}
