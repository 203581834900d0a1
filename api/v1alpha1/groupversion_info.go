// Package v1alpha1 holds the podwall.io/v1alpha1 API: WorkloadPolicy, one per workload, which policygen
// generates from the workload's manifest and learned traffic and which people may extend with their own
// rules. The OpenAPI and CEL markers here make the API server reject malformed rules, so that a bad
// policy never reaches a sidecar.
//
// +kubebuilder:object:generate=true
// +groupName=podwall.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of every type here.
	GroupVersion  = schema.GroupVersion{Group: "podwall.io", Version: "v1alpha1"}
	schemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &WorkloadPolicy{}, &WorkloadPolicyList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
	// AddToScheme adds the types to a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)
