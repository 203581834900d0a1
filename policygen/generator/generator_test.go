package generator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/workload"
)

func deployment(ns, name string, env ...corev1.EnvVar) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "app", Env: env,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
				}}},
			},
		},
	}
}

func service(ns, name string, port int32, target intstr.IntOrString) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Protocol: "TCP", Port: port, TargetPort: target}}},
	}
}

func TestGeneratorWritesManifestRulesAndKeepsUserRules(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		return New(mgr.GetClient(), Options{}).SetupWithManager(mgr)
	})
	pgtest.Namespace(t, c, "shop", map[string]string{InjectLabel: "enabled"})
	pgtest.Namespace(t, c, "plain", nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, service("shop", "web", 80, intstr.FromString("http"))))
	must(c.Create(ctx, service("shop", "api", 9000, intstr.FromInt32(9001))))
	must(c.Create(ctx, deployment("shop", "web", corev1.EnvVar{Name: "API_URL", Value: "http://api:9000/"})))
	must(c.Create(ctx, deployment("plain", "web")))

	want := v1.WorkloadPolicySpec{
		Workload: v1.WorkloadRef{Kind: "Deployment", Name: "web"},
		Mode:     policy.Learn,
		Ingress: []v1.Rule{
			{Name: "m-probes", Origin: "manifest", Peers: []v1.Peer{{Nodes: true}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
			{Name: "m-svc-web", Origin: "manifest", Peers: []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}},
		},
		Egress: []v1.Rule{
			{Name: "m-dns", Origin: "manifest", Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "kube-system", Name: "kube-dns"}}},
				Ports: []v1.Port{{Protocol: "TCP", Port: 53}, {Protocol: "UDP", Port: 53}}},
			{Name: "m-svc-api", Origin: "manifest", Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "shop", Name: "api"}}},
				Ports: []v1.Port{{Protocol: "TCP", Port: 9000}, {Protocol: "TCP", Port: 9001}}},
		},
	}
	key := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	var p v1.WorkloadPolicy
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := c.Get(ctx, key, &p); err != nil {
			return err
		}
		if d := cmp.Diff(want, p.Spec); d != "" {
			return fmt.Errorf("spec (-want +got):\n%s", d)
		}
		return nil
	})
	if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Kind != "Deployment" {
		t.Errorf("owner references %+v, want the Deployment", p.OwnerReferences)
	}

	// A user rule survives regeneration; a manifest rule deleted by hand comes back.
	user := v1.Rule{Name: "m-svc-web", Origin: "user", Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}
	// The generator may write the policy (its status) meanwhile: edit the latest version.
	must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, key, &p); err != nil {
			return err
		}
		p.Spec.Ingress = []v1.Rule{user}
		p.Spec.Egress = p.Spec.Egress[:1]
		return c.Update(ctx, &p)
	}))
	admin := service("shop", "web-admin", 81, intstr.FromInt32(8081))
	admin.Spec.Selector = map[string]string{"app": "web"}
	must(c.Create(ctx, admin))
	want.Ingress = []v1.Rule{user, want.Ingress[0], {Name: "m-svc-web-admin", Origin: "manifest",
		Peers: []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8081}}}}
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := c.Get(ctx, key, &p); err != nil {
			return err
		}
		if d := cmp.Diff(want, p.Spec); d != "" {
			return fmt.Errorf("spec (-want +got):\n%s", d)
		}
		return nil
	})

	// Namespaces that did not opt in get no policy.
	err := c.Get(ctx, types.NamespacedName{Namespace: "plain", Name: "deployment-web"}, &p)
	if !apierrors.IsNotFound(err) {
		t.Errorf("policy in a namespace without %s: err %v", InjectLabel, err)
	}
}

// A namespace user's pod that claims a workload it does not belong to is a bare pod: it gets a policy of
// its own, and the claimed workload's policy is not touched. The generator's cache never holds the
// ReplicaSets here (they lack the label it selects), so every owner check goes to the API server, as
// for a ReplicaSet the informer has not seen yet.
func TestGeneratorGivesARefusedPodItsOwnPolicy(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	gated := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&appsv1.ReplicaSet{}: {Label: labels.SelectorFromSet(labels.Set{"cached": "yes"})}}}
	mgr := pgtest.ManagerWithCache(t, cfg, gated, func(mgr manager.Manager) error {
		return New(mgr.GetClient(), Options{APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr)
	})
	pgtest.Namespace(t, c, "shop", map[string]string{InjectLabel: "enabled"})
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	genuine := k.Deployment("shop", "web", "", "10.0.0.1")[0]
	depKey := types.NamespacedName{Namespace: "shop", Name: "deployment-web"}
	var dep v1.WorkloadPolicy
	testutil.Eventually(t, 10*time.Second, func() error { return c.Get(ctx, depKey, &dep) })

	mallory := k.PodCreator("shop", "mallory")
	yes, no := true, false
	var dp appsv1.Deployment
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "web"}, &dp); err != nil {
		t.Fatal(err)
	}
	rs := genuine.OwnerReferences[0]
	notController := rs
	notController.Controller = &no
	spoofs := map[string]struct {
		ref    metav1.OwnerReference
		labels map[string]string
	}{
		"spoof-dep":        {metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "not-web", Controller: &yes}, genuine.Labels},
		"spoof-rs":         {metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: "not-web-rs", Controller: &yes}, genuine.Labels},
		"spoof-controller": {notController, genuine.Labels},
		"spoof-labels":     {rs, map[string]string{"app": "mallory"}},
	}
	for name, sp := range spoofs {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: sp.labels,
			OwnerReferences: []metav1.OwnerReference{sp.ref}}, Spec: genuine.Spec}
		if err := mallory.Create(ctx, p); err != nil {
			t.Fatalf("mallory creates %s: %v", name, err)
		}
	}
	for name := range spoofs {
		var p v1.WorkloadPolicy
		testutil.Eventually(t, 10*time.Second, func() error {
			return c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "pod-" + name}, &p)
		})
		if p.Spec.Workload != (v1.WorkloadRef{Kind: "Pod", Name: name}) {
			t.Errorf("policy pod-%s is for %+v", name, p.Spec.Workload)
		}
		if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Kind != "Pod" || p.OwnerReferences[0].Name != name {
			t.Errorf("policy pod-%s has owners %+v, want the pod", name, p.OwnerReferences)
		}
	}

	// Adopted at last (its reference to the ReplicaSet made a controller's, as the ReplicaSet controller
	// adopts a matching orphan), the pod is the Deployment's: the policy it had of its own goes.
	var adopted corev1.Pod
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "spoof-controller"}, &adopted); err != nil {
		t.Fatal(err)
	}
	adopted.OwnerReferences[0].Controller = &yes
	if err := c.Update(ctx, &adopted); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var p v1.WorkloadPolicy
		if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "pod-spoof-controller"}, &p); !apierrors.IsNotFound(err) {
			return fmt.Errorf("policy pod-spoof-controller of the adopted pod still there (err %v)", err)
		}
		return nil
	})

	// The Deployment's pod is not a workload of its own, though the cache lacks its ReplicaSet; when
	// the API server cannot be asked either (here it refuses mallory's read), the answer is an error to
	// retry, not a bare pod.
	req := requestFor(workload.Key{Namespace: "shop", Kind: "Pod", Name: genuine.Name})
	if _, err := New(mgr.GetClient(), Options{APIReader: mallory}).Reconcile(ctx, req); err == nil {
		t.Error("reconciling the Deployment's pod without a readable owner succeeded, want an error")
	}
	if _, err := New(mgr.GetClient(), Options{APIReader: mgr.GetAPIReader()}).Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	var p v1.WorkloadPolicy
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "pod-" + genuine.Name}, &p); !apierrors.IsNotFound(err) {
		t.Errorf("policy for the Deployment's pod: err %v", err)
	}
	var after v1.WorkloadPolicy
	if err := c.Get(ctx, depKey, &after); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(dep.Spec, after.Spec); d != "" || after.OwnerReferences[0].UID != dp.UID {
		t.Errorf("Deployment's policy changed (-before +after):\n%s\nowners %+v", d, after.OwnerReferences)
	}
}
