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

// AcceptedByAnnotation names who asked for the AcceptProposalsAnnotation when a service set it on
// their behalf (policygen's UI, which writes as its own ServiceAccount): the acceptance Event names
// them, and policygen removes it with the accept annotation. Without it the Event names nobody, and
// the API server's audit log has the author of the edit.
const AcceptedByAnnotation = "podwall.io/accepted-by"

// PublicAnnotation on a Service, set to "true", says its callers come from outside the cluster, as a
// LoadBalancer or NodePort Service's do: the manifest rule keeps its ports open to every address in
// every mode instead of narrowing them to the callers observed while the policy learned.
const PublicAnnotation = "podwall.io/public"

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

// ExportLossyAnnotation on a NetworkPolicy that policygen keeps in sync with a WorkloadPolicy
// (--networkpolicy-sync) lists, one per line, what the NetworkPolicy does not express of the policy:
// DNS-name peers, loopback rules, ICMP, node peers and whatever else the export notes.
// Export never widens a part to express it: a listed part is denied by the NetworkPolicy (a rule or
// peer left out) or not seen by it (loopback), and podwall goes on enforcing the whole policy.
const ExportLossyAnnotation = "podwall.io/export-lossy"
