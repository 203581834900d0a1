package manifest

import (
	"cmp"
	"slices"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// ReplaceOrigin returns rules with every rule of origin replaced by generated, keeping the rules of
// other origins untouched and in place. A generated rule whose name another origin's rule already
// holds is dropped: a person's rule always wins over a generated one. Generated rules follow the kept
// ones, sorted by name, so that the result does not depend on the order of generation.
func ReplaceOrigin(rules []v1.Rule, origin policy.Origin, generated []v1.Rule) []v1.Rule {
	out := make([]v1.Rule, 0, len(rules)+len(generated))
	taken := map[string]bool{}
	for _, r := range rules {
		if r.Origin != origin {
			out = append(out, r)
			taken[r.Name] = true
		}
	}
	gen := slices.Clone(generated)
	slices.SortFunc(gen, func(a, b v1.Rule) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range gen {
		if !taken[r.Name] {
			r.Origin = origin
			out = append(out, r)
			taken[r.Name] = true
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
