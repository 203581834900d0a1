package generator

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/manifest"
)

// Event reasons on a WorkloadPolicy.
const (
	ReasonProposed    = "ManifestRuleProposed"
	ReasonAccepted    = "ManifestRuleAccepted"
	ReasonNotProposed = "ProposalNotPending"
)

// gated is what a reconcile writes into a policy: its manifest rules, the proposals that wait, and
// what an accept annotation accepted and named in vain, and who asked (when a service said so).
type gated struct {
	ingress, egress []v1.Rule
	loopback        []v1.LoopbackRule
	open            []v1.OpenPort
	proposals       []v1.Proposal
	accepted        []v1.Proposal
	unknown         []string
	by              string
}

// gate decides which manifest rules go into p now. In Learn and Monitor, or with
// spec.autoAcceptManifestRules, all of them: they are what the workload's manifest says today. In
// Protect a rule that adds or widens waits as a proposal unless p's accept annotation names it (or
// says all); what only tightens applies at once (manifest.Gate).
func gate(p *v1.WorkloadPolicy, rules manifest.Rules) gated {
	if cmp.Or(p.Spec.Mode, policy.Learn) != policy.Protect || p.Spec.AutoAcceptManifestRules {
		return gated{ingress: rules.Ingress, egress: rules.Egress, loopback: rules.Loopback, open: rules.Open}
	}
	names := v1.AcceptedProposals(p.Annotations[v1.AcceptProposalsAnnotation])
	used := map[string]bool{}
	accept := func(name string) bool {
		if slices.Contains(names, name) || slices.Contains(names, v1.AcceptAll) {
			used[name] = true
			return true
		}
		return false
	}
	g := gated{loopback: rules.Loopback, open: rules.Open, by: p.Annotations[v1.AcceptedByAnnotation]}
	var pi, pe []v1.Proposal
	g.ingress, pi = manifest.Gate("ingress", p.Spec.Ingress, rules.Ingress, rules.Sources, accept)
	g.egress, pe = manifest.Gate("egress", p.Spec.Egress, rules.Egress, rules.Sources, accept)
	g.proposals = append(pi, pe...)
	for _, d := range []struct {
		name  string
		rules []v1.Rule
	}{{"ingress", rules.Ingress}, {"egress", rules.Egress}} {
		for _, r := range d.rules {
			if n := manifest.ProposalName(d.name, r); used[n] {
				g.accepted = append(g.accepted, v1.Proposal{Name: n, Direction: d.name, Rule: r, Source: rules.Sources[manifest.SourceKey(d.name, r.Name)]})
			}
		}
	}
	for _, n := range names {
		if n != v1.AcceptAll && !used[n] {
			g.unknown = append(g.unknown, n)
		}
	}
	return g
}

// maxListed is how many proposals the status lists (the API's bound); PendingProposals counts all.
const maxListed = 64

// writeStatus records the pending proposals in p's status, each keeping the time it was first
// proposed, and the open Service ports; it says so in an Event for each new proposal and each
// acceptance.
func (g *Generator) writeStatus(ctx context.Context, p *v1.WorkloadPolicy, gt gated) error {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	list := slices.Clone(gt.proposals)
	slices.SortFunc(list, func(a, b v1.Proposal) int { return cmp.Compare(a.Name, b.Name) })
	count := int32(len(list))
	list = list[:min(len(list), maxListed)]
	var fresh []v1.Proposal
	for i := range list {
		if j := slices.IndexFunc(p.Status.Proposals, func(o v1.Proposal) bool { return o.Name == list[i].Name }); j >= 0 {
			list[i].Since = p.Status.Proposals[j].Since
		} else {
			list[i].Since = now
			fresh = append(fresh, list[i])
		}
	}
	open := gt.open[:min(len(gt.open), maxListed)]
	if !equality.Semantic.DeepEqual(list, p.Status.Proposals) || count != p.Status.PendingProposals ||
		!equality.Semantic.DeepEqual(open, p.Status.OpenPorts) {
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"proposals": list, "pendingProposals": count, "openPorts": open}})
		if err := g.client.Status().Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("record proposals and open ports of %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	if g.opts.Events == nil {
		return nil
	}
	for _, pr := range fresh {
		g.opts.Events.Eventf(p, nil, "Normal", ReasonProposed, "Propose", "%s", note(fmt.Sprintf(
			"%s: the %s rule %s would widen this Protect policy and waits for acceptance; accept it with "+
				"kubectl -n %s annotate workloadpolicy %s %s=%s (or in the UI)",
			pr.Source, pr.Direction, pr.Rule.Name, p.Namespace, p.Name, v1.AcceptProposalsAnnotation, pr.Name)))
	}
	by := ""
	if gt.by != "" {
		by = " for " + gt.by
	}
	for _, pr := range gt.accepted {
		g.opts.Events.Eventf(p, nil, "Normal", ReasonAccepted, "Accept", "%s", note(fmt.Sprintf(
			"accepted %s%s: the %s rule %s is in the policy (%s)", pr.Name, by, pr.Direction, pr.Rule.Name, pr.Source)))
	}
	for _, n := range gt.unknown {
		g.opts.Events.Eventf(p, nil, "Warning", ReasonNotProposed, "Accept", "%s", note(fmt.Sprintf(
			"%s names %s, which is not pending (its rule changed since, so it has another name, or it was applied): "+
				"nothing accepted for it; see status.proposals", v1.AcceptProposalsAnnotation, n)))
	}
	return nil
}

// note keeps an Event's note within the API's 1 kB.
func note(s string) string {
	if len(s) > 1000 {
		return s[:997] + "..."
	}
	return s
}
