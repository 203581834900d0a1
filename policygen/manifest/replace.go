package manifest

import (
	"slices"
	"strings"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// ReplaceOrigin returns rules with every rule of origin replaced by generated, keeping the rules of
// other origins untouched and in place. A generated rule whose name another origin's rule already
// holds is dropped: a person's rule always wins over a generated one. Generated rules follow the kept
// ones, sorted by name, so that the result does not depend on the order of generation.
func ReplaceOrigin(rules []v1.Rule, origin policy.Origin, generated []v1.Rule) []v1.Rule {
	return replaceOrigin(rules, origin, generated, func(r *v1.Rule) (*string, *policy.Origin) { return &r.Name, &r.Origin })
}

// ReplaceLoopbackOrigin is ReplaceOrigin for loopback rules.
func ReplaceLoopbackOrigin(rules []v1.LoopbackRule, origin policy.Origin, generated []v1.LoopbackRule) []v1.LoopbackRule {
	return replaceOrigin(rules, origin, generated, func(r *v1.LoopbackRule) (*string, *policy.Origin) { return &r.Name, &r.Origin })
}

func replaceOrigin[R any](rules []R, origin policy.Origin, generated []R, fields func(*R) (name *string, origin *policy.Origin)) []R {
	out := make([]R, 0, len(rules)+len(generated))
	taken := map[string]bool{}
	for _, r := range rules {
		if name, o := fields(&r); *o != origin {
			out = append(out, r)
			taken[*name] = true
		}
	}
	gen := slices.Clone(generated)
	slices.SortFunc(gen, func(a, b R) int {
		na, _ := fields(&a)
		nb, _ := fields(&b)
		return strings.Compare(*na, *nb)
	})
	for _, r := range gen {
		if name, o := fields(&r); !taken[*name] {
			*o = origin
			out = append(out, r)
			taken[*name] = true
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
