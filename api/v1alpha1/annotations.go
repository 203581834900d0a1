package v1alpha1

import (
	"slices"
	"strings"
)

// AcceptProposalsAnnotation on a WorkloadPolicy accepts pending proposals: a comma-separated list of
// their names, or "all" for whatever is pending when policygen reads it. policygen applies the named
// proposals that are still pending and removes the annotation; setting it takes the right to update
// the policy, the same right that writes rules directly. A name no longer pending (its rule changed,
// so it got another name) accepts nothing.
const AcceptProposalsAnnotation = "podwall.io/accept-proposals"

// AcceptAll is the AcceptProposalsAnnotation value that accepts every pending proposal.
const AcceptAll = "all"

// AcceptedProposals returns the names an AcceptProposalsAnnotation value lists (AcceptAll as itself).
func AcceptedProposals(value string) []string {
	var names []string
	for _, n := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}
