package policy

import (
	"fmt"
	"strings"
)

// DNS names in rules (Rule.Names). A name pattern is an exact name ("api.stripe.com") or a one-label
// wildcard ("*.s3.amazonaws.com", which matches "bucket.s3.amazonaws.com" but neither
// "s3.amazonaws.com" nor "a.b.s3.amazonaws.com"), in lower case, without the root's trailing dot.

// MaxNameLength is the longest name in presentation form without the trailing dot (RFC 1035: 255
// octets on the wire).
const MaxNameLength = 253

// CanonicalName returns a DNS name as rules and verdict lines write it: lower case (ASCII only, as
// DNS compares names), without the trailing dot.
func CanonicalName(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// ValidateName reports what makes name no valid canonical DNS name: labels of 1-63 letters, digits,
// '-' and '_' (service names such as _sip._tcp), not starting or ending with '-', at most
// MaxNameLength in all, at least two labels (a bare "com" is no peer), and in canonical form.
func ValidateName(name string) error {
	if name != CanonicalName(name) {
		return fmt.Errorf("name %q: want lower case without a trailing dot", name)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("name %q: over %d characters", name, MaxNameLength)
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return fmt.Errorf("name %q: want at least two labels (example.com)", name)
	}
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return fmt.Errorf("name %q: %w", name, err)
		}
	}
	return nil
}

// ValidateNamePattern is ValidateName for a rule's pattern: an exact name, or "*." and a name of at
// least two labels ("*.example.com"; "*.com" is refused).
func ValidateNamePattern(pattern string) error {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		if err := ValidateName(rest); err != nil {
			return fmt.Errorf("pattern %q: %w", pattern, err)
		}
		return nil
	}
	if strings.Contains(pattern, "*") {
		return fmt.Errorf("pattern %q: a wildcard is one leading label, \"*.example.com\"", pattern)
	}
	return ValidateName(pattern)
}

func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return fmt.Errorf("label %q: want 1-63 characters", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("label %q: want letters, digits, '-' and '_'", l)
		}
	}
	return nil
}

// MatchName says whether the canonical name matches the valid pattern. It does not allocate.
func MatchName(pattern, name string) bool {
	rest, wild := strings.CutPrefix(pattern, "*.")
	if !wild {
		return pattern == name
	}
	// One label, then exactly the rest: "x.example.com" for "*.example.com".
	i := strings.IndexByte(name, '.')
	return i > 0 && name[i+1:] == rest
}

// MatchAny returns the first of names (in their order) that one of patterns matches. It does not
// allocate.
func MatchAny(patterns, names []string) (string, bool) {
	for _, n := range names {
		for _, p := range patterns {
			if MatchName(p, n) {
				return n, true
			}
		}
	}
	return "", false
}

// NamePeer is the Rule.Peer of a rule allowing a name pattern: "fqdn:api.stripe.com".
func NamePeer(pattern string) string { return "fqdn:" + pattern }
