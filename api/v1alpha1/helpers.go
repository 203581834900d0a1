package v1alpha1

import (
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
