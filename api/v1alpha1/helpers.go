package v1alpha1

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// AsSelector converts s to a labels.Selector; a nil selector matches everything.
func (s *LabelSelector) AsSelector() (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s.AsMeta())
}

// AsMeta converts s to the metav1 form.
func (s *LabelSelector) AsMeta() *metav1.LabelSelector {
	m := &metav1.LabelSelector{}
	if len(s.MatchLabels) > 0 {
		m.MatchLabels = map[string]string{}
		for k, v := range s.MatchLabels {
			m.MatchLabels[k] = string(v)
		}
	}
	for _, e := range s.MatchExpressions {
		m.MatchExpressions = append(m.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: e.Key, Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values,
		})
	}
	return m
}

// NamespaceName is the namespace s selects when it selects one by name alone: the label
// kubernetes.io/metadata.name, which the API server sets to each namespace's name and keeps so, as the
// only requirement.
func (s *LabelSelector) NamespaceName() (string, bool) {
	if s == nil || len(s.MatchExpressions) > 0 || len(s.MatchLabels) != 1 {
		return "", false
	}
	name, ok := s.MatchLabels[corev1.LabelMetadataName]
	return string(name), ok
}

// SidecarVersionList lists counts (sidecars by version) as status holds them: the most common
// versions first (then by version), at most MaxSidecarVersions, the rest summed as OtherVersions.
// Versions counted zero are left out; nil when none is left.
func SidecarVersionList(counts map[string]int32) []SidecarVersion {
	var out []SidecarVersion
	for v, n := range counts {
		if n > 0 {
			out = append(out, SidecarVersion{Version: v, Count: n})
		}
	}
	slices.SortFunc(out, func(a, b SidecarVersion) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Version, b.Version))
	})
	if len(out) <= MaxSidecarVersions {
		return out
	}
	// A version spelled like OtherVersions is summed with the rest, so that the key stays unique.
	kept, other := out[:0:0], SidecarVersion{Version: OtherVersions}
	for _, v := range out {
		if len(kept) < MaxSidecarVersions-1 && v.Version != OtherVersions {
			kept = append(kept, v)
		} else {
			other.Count += v.Count
		}
	}
	return append(kept, other)
}
