package learn

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

func TestPromote(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }
	opts := PromoteOptions{LearnQuiet: time.Hour, MonitorQuiet: 2 * time.Hour}
	one := intstr.FromInt32(1)
	covered := &v1.Coverage{Since: *at(0), Pods: 2, Reported: 2, ObservedHours: 100, Flows: 10, Complete: true}
	silent := &v1.Coverage{Since: *at(0), Pods: 2, Reported: 1, GapHours: 1}
	tests := []struct {
		name     string
		spec     v1.WorkloadPolicySpec
		status   v1.WorkloadPolicyStatus
		now      time.Duration
		opts     PromoteOptions
		want     policy.Mode
		wantWait time.Duration
		blocked  string
	}{
		{"learn, not quiet long enough", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 40 * time.Minute, opts, policy.Learn, 20 * time.Minute, ""},
		{"learn, quiet", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, time.Hour, opts, policy.Monitor, 0, ""},
		{"learn, learned recently", v1.WorkloadPolicySpec{}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), LastLearned: at(50 * time.Minute)}, 70 * time.Minute, opts, policy.Learn, 40 * time.Minute, ""},
		{"learn, learned before the mode began", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(time.Hour), LastLearned: at(0)}, 2 * time.Hour, opts, policy.Monitor, 0, ""},
		{"learn promotion off", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 100 * time.Hour, PromoteOptions{MonitorQuiet: time.Hour}, policy.Learn, 0, ""},
		{"monitor without auto-protect stays", v1.WorkloadPolicySpec{Mode: policy.Monitor}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 100 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, auto-protect, quiet", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 2 * time.Hour, opts, policy.Protect, 0, ""},
		{"monitor, auto-protect, recent audit", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), LastViolation: at(90 * time.Minute)}, 2 * time.Hour, opts, policy.Monitor, 90 * time.Minute, ""},
		{"protect stays", v1.WorkloadPolicySpec{Mode: policy.Protect, AutoProtect: true}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 100 * time.Hour, opts, policy.Protect, 0, ""},
		{"clock not started", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{}, 100 * time.Hour, opts, policy.Learn, 0, ""},
		{"learn, quiet, a silent pod", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{Coverage: silent, ModeSince: at(0)}, time.Hour, opts, policy.Learn, 0,
			"1 of 2 pods have no sidecar subscribed; 1 hours since 2026-01-01T00:00:00Z had a pod without a sidecar (the window restarts when the rules change)"},
		{"learn, not measured", v1.WorkloadPolicySpec{Mode: policy.Learn}, v1.WorkloadPolicyStatus{ModeSince: at(0)}, time.Hour, opts, policy.Learn, 0,
			"coverage not measured yet"},
		{"monitor, auto-protect, quiet, would deny", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true},
			v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), WouldDenyFlows: 3}, time.Hour, opts, policy.Monitor, time.Hour,
			"3 flows Protect would deny (status.wouldDeny): allow them with a rule, or promote by hand"},
		{"monitor, auto-protect, no pod", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true},
			v1.WorkloadPolicyStatus{Coverage: &v1.Coverage{Since: *at(0)}, ModeSince: at(0)}, 3 * time.Hour, opts, policy.Monitor, 0,
			"the workload runs no pod to observe"},
		{"monitor without auto-protect: nothing is blocked", v1.WorkloadPolicySpec{Mode: policy.Monitor},
			v1.WorkloadPolicyStatus{Coverage: silent, ModeSince: at(0), WouldDenyFlows: 3}, 3 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, canary running", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), Canary: &v1.CanaryStatus{State: v1.CanaryRunning}}, 100 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, canary stopped", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), Canary: &v1.CanaryStatus{State: v1.CanaryStopped}}, 100 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, canary not begun", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0)}, 100 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, canary passed", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), LastViolation: at(time.Hour), Canary: &v1.CanaryStatus{State: v1.CanaryPassed}}, time.Hour, opts, policy.Protect, 0, ""},
		{"monitor, canary passed, promotion off", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), Canary: &v1.CanaryStatus{State: v1.CanaryPassed}}, 100 * time.Hour, PromoteOptions{LearnQuiet: time.Hour}, policy.Monitor, 0, ""},
		{"monitor, canary passed, no auto-protect", v1.WorkloadPolicySpec{Mode: policy.Monitor, Canary: &one}, v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), Canary: &v1.CanaryStatus{State: v1.CanaryPassed}}, 100 * time.Hour, opts, policy.Monitor, 0, ""},
		{"monitor, canary passed, would deny", v1.WorkloadPolicySpec{Mode: policy.Monitor, AutoProtect: true, Canary: &one},
			v1.WorkloadPolicyStatus{Coverage: covered, ModeSince: at(0), WouldDenyFlows: 1, Canary: &v1.CanaryStatus{State: v1.CanaryPassed}}, 100 * time.Hour, opts, policy.Monitor, 0,
			"1 flows Protect would deny (status.wouldDeny): allow them with a rule, or promote by hand"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, wait, blocked := Promote(&tc.spec, &tc.status, t0.Add(tc.now), tc.opts)
			if got != tc.want || wait != tc.wantWait || blocked != tc.blocked {
				t.Errorf("Promote = %s, %v, %q; want %s, %v, %q", got, wait, blocked, tc.want, tc.wantWait, tc.blocked)
			}
		})
	}
}
