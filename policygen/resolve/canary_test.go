package resolve

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
)

func TestCanaryPods(t *testing.T) {
	one := intstr.FromInt32(1)
	wp := func(mode policy.Mode, canary *intstr.IntOrString, st *v1alpha1.CanaryStatus) *v1alpha1.WorkloadPolicy {
		return &v1alpha1.WorkloadPolicy{Spec: v1alpha1.WorkloadPolicySpec{Mode: mode, Canary: canary},
			Status: v1alpha1.WorkloadPolicyStatus{Canary: st}}
	}
	status := func(state v1alpha1.CanaryState, pods ...string) *v1alpha1.CanaryStatus {
		return &v1alpha1.CanaryStatus{State: state, Pods: pods}
	}
	tests := []struct {
		name string
		wp   *v1alpha1.WorkloadPolicy
		want []string
	}{
		{"running", wp(policy.Monitor, &one, status(v1alpha1.CanaryRunning, "web-2", "web-1", "web-2")), []string{"web-1", "web-2"}},
		{"passed, waiting for promotion", wp(policy.Monitor, &one, status(v1alpha1.CanaryPassed, "web-1")), []string{"web-1"}},
		{"stopped", wp(policy.Monitor, &one, status(v1alpha1.CanaryStopped, "web-1")), nil},
		{"spec.canary removed", wp(policy.Monitor, nil, status(v1alpha1.CanaryRunning, "web-1")), nil},
		{"left Monitor for Protect", wp(policy.Protect, &one, status(v1alpha1.CanaryPassed, "web-1")), nil},
		{"back in Learn", wp(policy.Learn, &one, status(v1alpha1.CanaryRunning, "web-1")), nil},
		{"no status yet", wp(policy.Monitor, &one, nil), nil},
	}
	for _, tc := range tests {
		if got := CanaryPods(tc.wp); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
