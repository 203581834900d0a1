package policy

import (
	"fmt"
	"strings"
	"time"
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
	// HeaderGuard carries, on each request too, how the sidecar guards its pod beside the mode it
	// enforces (Guard), so that the replica it polls can count it as weakened.
	HeaderGuard = "X-Podwall-Guard"
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

// Guard is how a sidecar guards its pod beside the mode it enforces, sent in HeaderGuard as
// "fail=closed" or "fail=open", then "; tampered=<RFC 3339 time>" once another process changed its
// ruleset.
type Guard struct {
	// FailOpen: the sidecar lets new connections through while no verdict loop runs and removes its
	// ruleset when it stops.
	FailOpen bool
	// Tampered is when the sidecar last restored its ruleset after another process in the pod changed
	// it; zero for never.
	Tampered time.Time
}

// String is g as HeaderGuard carries it.
func (g Guard) String() string {
	s := "fail=closed"
	if g.FailOpen {
		s = "fail=open"
	}
	if !g.Tampered.IsZero() {
		s += "; tampered=" + g.Tampered.UTC().Format(time.RFC3339)
	}
	return s
}

// ParseGuard reads a sidecar's HeaderGuard: the zero Guard (fail closed, never tampered) when it sends
// none (sidecars older than the header), and an error for a value not of Guard.String's form. Keys it
// does not know are skipped, for sidecars newer than this policygen.
func ParseGuard(header string) (Guard, error) {
	var g Guard
	if header == "" {
		return g, nil
	}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(header, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return Guard{}, fmt.Errorf("%s %q: want fail=closed|open, then optionally ; tampered=<RFC 3339 time>, each once", HeaderGuard, header)
		}
		seen[k] = true
		switch k {
		case "fail":
			if v != "open" && v != "closed" {
				return Guard{}, fmt.Errorf("%s: fail=%q: want open or closed", HeaderGuard, v)
			}
			g.FailOpen = v == "open"
		case "tampered":
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return Guard{}, fmt.Errorf("%s: tampered=%q: want an RFC 3339 time", HeaderGuard, v)
			}
			g.Tampered = t
		}
	}
	if !seen["fail"] {
		return Guard{}, fmt.Errorf("%s %q: fail=closed|open missing", HeaderGuard, header)
	}
	return g, nil
}
