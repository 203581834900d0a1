package workload_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/workload"
)

func TestOf(t *testing.T) {
	_, c := pgtest.Start(t)
	ctx := context.Background()
	pgtest.Namespace(t, c, "ns", nil)
	yes := true
	owned := func(obj client.Object, apiVersion, kind string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: obj.GetName(), UID: obj.GetUID(), Controller: &yes}}
	}
	create := func(obj client.Object) client.Object {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	tpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	jobTpl := *tpl.DeepCopy()
	jobTpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
	dep := create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Spec: appsv1.DeploymentSpec{Selector: sel, Template: tpl}})
	rs := create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", OwnerReferences: owned(dep, "apps/v1", "Deployment")},
		Spec: appsv1.ReplicaSetSpec{Selector: sel, Template: tpl}})
	cron := create(&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "0 0 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: jobTpl}}}})
	job := create(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nightly-29000000", OwnerReferences: owned(cron, "batch/v1", "CronJob")},
		Spec: batchv1.JobSpec{Template: jobTpl}})
	pod := func(name string, refs []metav1.OwnerReference) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, OwnerReferences: refs}, Spec: tpl.Spec}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want workload.Key
		top  bool
	}{
		{"deployment pod", pod("web-1-x", owned(rs, "apps/v1", "ReplicaSet")), workload.Key{Namespace: "ns", Kind: "Deployment", Name: "web"}, false},
		{"cronjob pod", pod("nightly-x", owned(job, "batch/v1", "Job")), workload.Key{Namespace: "ns", Kind: "CronJob", Name: "nightly"}, false},
		{"statefulset pod", pod("db-0", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "u", Controller: &yes}}),
			workload.Key{Namespace: "ns", Kind: "StatefulSet", Name: "db"}, false},
		{"orphaned replicaset pod", pod("old-x", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "gone", UID: "u", Controller: &yes}}),
			workload.Key{Namespace: "ns", Kind: "ReplicaSet", Name: "gone"}, false},
		{"bare pod", pod("solo", nil), workload.Key{Namespace: "ns", Kind: "Pod", Name: "solo"}, true},
		{"unknown controller", pod("odd", []metav1.OwnerReference{{APIVersion: "x/v1", Kind: "Rollout", Name: "r", UID: "u", Controller: &yes}}),
			workload.Key{Namespace: "ns", Kind: "Pod", Name: "odd"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := workload.Of(ctx, c, tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Of = %v, want %v", got, tc.want)
			}
			if workload.IsTop(tc.pod) != tc.top {
				t.Errorf("IsTop = %v, want %v", !tc.top, tc.top)
			}
		})
	}
	if workload.IsTop(rs) || workload.IsTop(job) || !workload.IsTop(dep) || !workload.IsTop(cron) {
		t.Error("IsTop: a controlled ReplicaSet or Job is not a workload; a Deployment or CronJob is")
	}
}

func TestPolicyName(t *testing.T) {
	if got := workload.PolicyName("Deployment", "web"); got != "deployment-web" {
		t.Errorf("PolicyName = %q", got)
	}
	long := workload.PolicyName("StatefulSet", strings.Repeat("a", 300))
	if len(long) > 253 {
		t.Errorf("PolicyName of a long name has %d characters", len(long))
	}
}
