package workload_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/workload"
)

func TestOf(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	pgtest.Namespace(t, c, "ns", nil)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	yes, no := true, false
	ref := func(obj client.Object, apiVersion, kind string, controller *bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: obj.GetName(), UID: obj.GetUID(), Controller: controller}}
	}
	owned := func(obj client.Object, apiVersion, kind string) []metav1.OwnerReference {
		return ref(obj, apiVersion, kind, &yes)
	}
	tpl := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	}
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	deployment := func(name string) (dep, rs client.Object) {
		dep = k.Create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: appsv1.DeploymentSpec{Selector: sel(name), Template: tpl(name)}})
		rs = k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-1", Labels: map[string]string{"app": name},
			OwnerReferences: owned(dep, "apps/v1", "Deployment")}, Spec: appsv1.ReplicaSetSpec{Selector: sel(name), Template: tpl(name)}})
		return dep, rs
	}
	dep, rs := deployment("web")
	_, payments := deployment("payments")
	jobTpl := tpl("nightly")
	jobTpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	cron := k.Create(&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "0 0 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: jobTpl}}}})
	job := k.Create(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nightly-29000000", OwnerReferences: owned(cron, "batch/v1", "CronJob")},
		Spec: batchv1.JobSpec{Template: jobTpl}}).(*batchv1.Job)
	sts := k.Create(&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"},
		Spec: appsv1.StatefulSetSpec{Selector: sel("db"), Template: tpl("db")}})
	// A ReplicaSet that claims the web Deployment with a UID that is not the Deployment's.
	forged := k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-forged", Labels: map[string]string{"app": "web"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "not-web", Controller: &yes}}},
		Spec: appsv1.ReplicaSetSpec{Selector: sel("web"), Template: tpl("web")}})
	mallory := k.PodCreator("ns", "mallory")
	byMallory := func(name, app string, refs []metav1.OwnerReference) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"app": app}, OwnerReferences: refs},
			Spec: tpl(app).Spec}
		if err := mallory.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod := func(name string, labels map[string]string, refs []metav1.OwnerReference) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: labels, OwnerReferences: refs}, Spec: tpl("").Spec}
	}
	web := map[string]string{"app": "web"}
	bare := func(name string) workload.Key { return workload.Key{Namespace: "ns", Kind: "Pod", Name: name} }
	tests := []struct {
		name string
		pod  *corev1.Pod
		want workload.Key
	}{
		{"deployment pod", pod("web-1-x", web, owned(rs, "apps/v1", "ReplicaSet")), workload.Key{Namespace: "ns", Kind: "Deployment", Name: "web"}},
		{"cronjob pod", pod("nightly-x", job.Spec.Template.Labels, owned(job, "batch/v1", "Job")), workload.Key{Namespace: "ns", Kind: "CronJob", Name: "nightly"}},
		{"statefulset pod", pod("db-0", map[string]string{"app": "db"}, owned(sts, "apps/v1", "StatefulSet")), workload.Key{Namespace: "ns", Kind: "StatefulSet", Name: "db"}},
		{"bare pod", pod("solo", nil, nil), bare("solo")},
		{"unknown controller", pod("odd", nil, []metav1.OwnerReference{{APIVersion: "x/v1", Kind: "Rollout", Name: "r", UID: "u", Controller: &yes}}), bare("odd")},
		{"owner of another group", pod("other", web, []metav1.OwnerReference{{APIVersion: "x/v1", Kind: "ReplicaSet", Name: "web-1", UID: rs.GetUID(), Controller: &yes}}), bare("other")},
		{"owner gone", pod("old-x", web, []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "gone", UID: "u", Controller: &yes}}), bare("old-x")},
		{"wrong UID", pod("claim-uid", web, []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-1", UID: "not-web-1", Controller: &yes}}), bare("claim-uid")},
		{"wrong UID up the chain", pod("claim-chain", web, owned(forged, "apps/v1", "ReplicaSet")), bare("claim-chain")},
		{"deployment claimed directly", pod("claim-dep", web, owned(dep, "apps/v1", "Deployment")), bare("claim-dep")},
		{"controller unset", pod("claim-nil", web, ref(rs, "apps/v1", "ReplicaSet", nil)), bare("claim-nil")},
		{"controller false", pod("claim-false", web, ref(rs, "apps/v1", "ReplicaSet", &no)), bare("claim-false")},
		// mallory reads payments' ReplicaSet UID from a running pod of it and writes it into her own.
		{"right UID, labels outside the selector", byMallory("claim-labels", "mallory", owned(payments, "apps/v1", "ReplicaSet")), bare("claim-labels")},
		// The limit: a pod with the right UID and labels the selector matches is one the ReplicaSet
		// controller counts as its own too; nothing in the API says who created it.
		{"right UID and labels", byMallory("claim-all", "payments", owned(payments, "apps/v1", "ReplicaSet")), workload.Key{Namespace: "ns", Kind: "Deployment", Name: "payments"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := workload.Of(ctx, c, nil, tc.pod); err != nil || got != tc.want {
				t.Errorf("Of = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	// Owners is the verified chain: a refused pod counts for nothing but itself, not even for the
	// ReplicaSet it names correctly below a forged one.
	for _, tc := range []struct {
		pod  *corev1.Pod
		want []workload.Key
	}{
		{pod("web-1-y", web, owned(rs, "apps/v1", "ReplicaSet")), []workload.Key{bare("web-1-y"),
			{Namespace: "ns", Kind: "ReplicaSet", Name: "web-1"}, {Namespace: "ns", Kind: "Deployment", Name: "web"}}},
		{pod("claim-chain-2", web, owned(forged, "apps/v1", "ReplicaSet")), []workload.Key{bare("claim-chain-2")}},
	} {
		if got, err := workload.Owners(ctx, c, nil, tc.pod); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Owners(%s) = %v, %v; want %v", tc.pod.Name, got, err, tc.want)
		}
	}
	// Claimed is the chain as written, verified or not: what a change to the pod may affect.
	if got, want := workload.Claimed(ctx, c, pod("claim-chain-3", web, owned(forged, "apps/v1", "ReplicaSet"))), []workload.Key{bare("claim-chain-3"),
		{Namespace: "ns", Kind: "ReplicaSet", Name: "web-forged"}, {Namespace: "ns", Kind: "Deployment", Name: "web"}}; !slices.Equal(got, want) {
		t.Errorf("Claimed = %v, want %v", got, want)
	}

	t.Run("replicaset not in the cache", func(t *testing.T) {
		// A cache that has not seen a new ReplicaSet: this one holds only labelled ReplicaSets, and the
		// new one has no label, so the test does not race the informer.
		ca, err := cache.New(cfg, cache.Options{Scheme: pgtest.Scheme(), ByObject: map[client.Object]cache.ByObject{
			&appsv1.ReplicaSet{}: {Label: labels.SelectorFromSet(labels.Set{"cached": "yes"})}}})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ca.Start(cctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("cache: %v", err)
			}
		})
		fresh := k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-2", Labels: web,
			OwnerReferences: owned(dep, "apps/v1", "Deployment")}, Spec: appsv1.ReplicaSetSpec{Selector: sel("web"), Template: tpl("web")}})
		p := k.Create(pod("web-2-x", web, owned(fresh, "apps/v1", "ReplicaSet"))).(*corev1.Pod)
		if got, err := workload.Of(ctx, ca, c, p); err != nil || got != (workload.Key{Namespace: "ns", Kind: "Deployment", Name: "web"}) {
			t.Errorf("Of with the API reader = %v, %v; want Deployment web", got, err)
		}
		if got, err := workload.Of(ctx, ca, nil, p); err != nil || got != bare("web-2-x") {
			t.Errorf("Of from the cache alone = %v, %v; want the bare pod", got, err)
		}
		// An API server that does not answer (here: refuses mallory's read) is not a refusal of the
		// owner: the caller is told to retry.
		if got, err := workload.Of(ctx, ca, mallory, p); err == nil {
			t.Errorf("Of with an API reader that cannot read = %v, want an error", got)
		}
		// What a cache-only caller re-verifies on: the chain as far as the cache holds it.
		if got, want := workload.Claimed(ctx, ca, p), []workload.Key{bare("web-2-x"), {Namespace: "ns", Kind: "ReplicaSet", Name: "web-2"}}; !slices.Equal(got, want) {
			t.Errorf("Claimed from the cache = %v, want %v", got, want)
		}
	})
}

func TestIsTop(t *testing.T) {
	yes := true
	controlled := func(kind string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "x", UID: "u", Controller: &yes}}
	}
	for _, tc := range []struct {
		name string
		obj  client.Object
		top  bool
	}{
		{"ReplicaSet of a Deployment", &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{OwnerReferences: controlled("Deployment")}}, false},
		// Of makes such a ReplicaSet its pods' workload (an Argo Rollout's, say), so it needs a policy.
		{"ReplicaSet of an unknown controller", &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{OwnerReferences: controlled("Rollout")}}, true},
		{"Deployment", &appsv1.Deployment{}, true},
		{"CronJob", &batchv1.CronJob{}, true},
	} {
		if workload.IsTop(tc.obj) != tc.top {
			t.Errorf("IsTop(%s) = %v, want %v", tc.name, !tc.top, tc.top)
		}
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
