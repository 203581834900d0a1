package netpolsync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
)

const wait = 10 * time.Second

// counting is the manager's client, counting the writes made through it.
type counting struct {
	client.Client
	writes atomic.Int64
}

func (c *counting) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *counting) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.writes.Add(1)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *counting) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.writes.Add(1)
	return c.Client.Delete(ctx, obj, opts...)
}

type world struct {
	t   *testing.T
	c   client.Client
	ctx context.Context
}

func (w world) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

// networkPolicy waits until the NetworkPolicy name of shop passes check, and returns it.
func (w world) networkPolicy(name, what string, check func(*networkingv1.NetworkPolicy) error) *networkingv1.NetworkPolicy {
	w.t.Helper()
	var np networkingv1.NetworkPolicy
	testutil.Await(w.t, what, wait, func() error {
		np = networkingv1.NetworkPolicy{}
		if err := w.c.Get(w.ctx, client.ObjectKey{Namespace: "shop", Name: name}, &np); err != nil {
			return err
		}
		return check(&np)
	})
	return &np
}

// gone waits until the NetworkPolicy name of shop does not exist.
func (w world) gone(name, what string) {
	w.t.Helper()
	testutil.Await(w.t, what, wait, func() error {
		err := w.c.Get(w.ctx, client.ObjectKey{Namespace: "shop", Name: name}, &networkingv1.NetworkPolicy{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("NetworkPolicy %s still there (%v)", name, err)
	})
}

// setMode writes the policy's mode.
func (w world) setMode(name string, mode policy.Mode) {
	w.t.Helper()
	var wp v1.WorkloadPolicy
	w.must(w.c.Get(w.ctx, client.ObjectKey{Namespace: "shop", Name: name}, &wp))
	wp.Spec.Mode = mode
	w.must(w.c.Update(w.ctx, &wp))
}

// event waits for an Event of reason on the policy whose note contains want.
func (w world) event(policyName, reason, want string) {
	w.t.Helper()
	testutil.Await(w.t, "event "+reason, wait, func() error {
		var list eventsv1.EventList
		if err := w.c.List(w.ctx, &list, client.InNamespace("shop")); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "WorkloadPolicy" && e.Regarding.Name == policyName && e.Reason == reason {
				if strings.Contains(e.Note, want) {
					return nil
				}
				seen = append(seen, e.Note)
			}
		}
		return fmt.Errorf("no %s event containing %q (saw %q)", reason, want, seen)
	})
}

func selector(labels map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labels}
}

// TestSyncKeepsOneNetworkPolicyPerProtectPolicy runs the syncer against a real API server through a
// policy's life: nothing in Monitor; in Protect the translation, owned by the policy and labelled, with
// the lossy parts in the annotation, the policy API and the sidecar's port allowed, and no write when
// in step; a change of a peer's pod labels or of the policy API's Service, a hand edit and a deletion
// each bring it back in line; one the API server refuses is reported in an Event; leaving Protect
// deletes it. A same-named NetworkPolicy podwall did not create is left untouched and reported in an
// Event, and taken over once it is gone. (The garbage collector, which deletes the NetworkPolicy with
// its policy, is not part of a test API server: the owner reference it follows is asserted.)
func TestSyncKeepsOneNetworkPolicyPerProtectPolicy(t *testing.T) {
	cfg, c := pgtest.Start(t)
	w := world{t: t, c: c, ctx: context.Background()}
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	pgtest.Namespace(t, c, "shop", nil)
	pgtest.Namespace(t, c, "podwall-system", nil)
	k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "podwall-system", Name: "podwall-policygen"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app.kubernetes.io/name": "podwall-policygen"},
			Ports: []corev1.ServicePort{{Port: 8443, TargetPort: intstr.FromString("api")}}}})
	k.Deployment("shop", "web", "")
	k.Deployment("shop", "db", "")
	k.Deployment("shop", "cache", "")
	var (
		syncer *Syncer
		writer *counting
	)
	mgr := pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		writer = &counting{Client: mgr.GetClient()}
		syncer = New(writer, Options{Events: mgr.GetEventRecorder("podwall-policygen")})
		return syncer.SetupWithManager(context.Background(), mgr)
	})

	spec := func(kind, name string, mode policy.Mode) v1.WorkloadPolicySpec {
		return v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: kind, Name: name}, Mode: mode,
			Egress: []v1.Rule{
				{Name: "db", Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "db"}}}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 5432}}},
				{Name: "stripe", Peers: []v1.Peer{{FQDN: "api.stripe.com"}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
			},
			Loopback: []v1.LoopbackRule{{Name: "admin", Action: "deny", Ports: []v1.Port{{Port: 15000}}}},
		}
	}
	web := k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-web"},
		Spec: spec("Deployment", "web", policy.Monitor)}).(*v1.WorkloadPolicy)
	k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-cache"},
		Spec: spec("Deployment", "cache", policy.Protect)})
	w.networkPolicy("podwall-deployment-cache", "the Protect policy's NetworkPolicy", func(*networkingv1.NetworkPolicy) error { return nil })
	if err := c.Get(w.ctx, client.ObjectKey{Namespace: "shop", Name: "podwall-deployment-web"}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a Monitor policy has a NetworkPolicy (%v): it would refuse what Monitor only audits", err)
	}

	tcp := corev1.ProtocolTCP
	port := func(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }
	sidecarPort := intstr.FromString("podwall-http")
	wantSpec := func(dbLabels map[string]string) networkingv1.NetworkPolicySpec {
		return networkingv1.NetworkPolicySpec{
			PodSelector: *selector(map[string]string{"app": "web"}),
			PolicyTypes: []networkingv1.PolicyType{"Ingress", "Egress"},
			// The sidecar's port, by its name in each pod, from anywhere.
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &sidecarPort}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{PodSelector: selector(dbLabels)}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(5432)}}},
				{To: []networkingv1.NetworkPolicyPeer{{PodSelector: selector(map[string]string{"app.kubernetes.io/name": "podwall-policygen"}),
					NamespaceSelector: selector(map[string]string{"kubernetes.io/metadata.name": "podwall-system"})}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8443)}}},
			},
		}
	}
	specIs := func(want networkingv1.NetworkPolicySpec) func(*networkingv1.NetworkPolicy) error {
		return func(np *networkingv1.NetworkPolicy) error {
			if d := cmp.Diff(want, np.Spec); d != "" {
				return fmt.Errorf("spec (-want +got):\n%s", d)
			}
			return nil
		}
	}

	w.setMode("deployment-web", policy.Protect)
	np := w.networkPolicy("podwall-deployment-web", "NetworkPolicy in Protect", specIs(wantSpec(map[string]string{"app": "db"})))
	if !metav1.IsControlledBy(np, web) {
		t.Errorf("owner references %+v: the policy does not control its NetworkPolicy", np.OwnerReferences)
	}
	if np.Labels["app.kubernetes.io/managed-by"] != "podwall" {
		t.Errorf("labels %v: not podwall's", np.Labels)
	}
	lossy := np.Annotations[v1.ExportLossyAnnotation]
	for _, want := range []string{"egress rule stripe: fqdn api.stripe.com", "egress rule stripe left out", "loopback rule admin"} {
		if !strings.Contains(lossy, want) {
			t.Errorf("annotation %s = %q, does not list %q", v1.ExportLossyAnnotation, lossy, want)
		}
	}
	// In step, a reconcile writes nothing: what the API server defaults in a NetworkPolicy does not
	// read as a difference, which would update it, and be woken by the update, forever.
	testutil.Await(t, "the cache holds the NetworkPolicy written", wait, func() error {
		var cached networkingv1.NetworkPolicy
		if err := mgr.GetClient().Get(w.ctx, client.ObjectKeyFromObject(np), &cached); err != nil {
			return err
		}
		if cached.ResourceVersion != np.ResourceVersion {
			return fmt.Errorf("cache at %s, API server at %s", cached.ResourceVersion, np.ResourceVersion)
		}
		return nil
	})
	before := writer.writes.Load()
	if _, err := syncer.Reconcile(w.ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(web)}); err != nil {
		t.Fatal(err)
	}
	if n := writer.writes.Load() - before; n != 0 {
		t.Errorf("a reconcile of a policy in step with its NetworkPolicy wrote %d times", n)
	}

	t.Run("a peer's pod labels change", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		var db appsv1.Deployment
		w.must(c.Get(w.ctx, client.ObjectKey{Namespace: "shop", Name: "db"}, &db))
		db.Spec.Template.Labels = map[string]string{"app": "db", "tier": "data"}
		w.must(c.Update(w.ctx, &db))
		w.networkPolicy("podwall-deployment-web", "the new labels selected", specIs(wantSpec(map[string]string{"app": "db", "tier": "data"})))
	})

	t.Run("the policy API's Service selector changes", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		var svc corev1.Service
		w.must(c.Get(w.ctx, client.ObjectKey{Namespace: "podwall-system", Name: "podwall-policygen"}, &svc))
		svc.Spec.Selector = map[string]string{"app.kubernetes.io/name": "podwall-policygen", "tier": "api"}
		w.must(c.Update(w.ctx, &svc))
		w.networkPolicy("podwall-deployment-web", "the policy API's new selector", func(np *networkingv1.NetworkPolicy) error {
			if len(np.Spec.Egress) != 2 || len(np.Spec.Egress[1].To) != 1 ||
				!maps.Equal(np.Spec.Egress[1].To[0].PodSelector.MatchLabels, svc.Spec.Selector) {
				return fmt.Errorf("egress %+v", np.Spec.Egress)
			}
			return nil
		})
		svc.Spec.Selector = map[string]string{"app.kubernetes.io/name": "podwall-policygen"}
		w.must(c.Update(w.ctx, &svc))
		w.networkPolicy("podwall-deployment-web", "the policy API's selector back", specIs(wantSpec(map[string]string{"app": "db", "tier": "data"})))
	})

	t.Run("a hand edit is put back", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		np := w.networkPolicy("podwall-deployment-web", "NetworkPolicy", func(*networkingv1.NetworkPolicy) error { return nil })
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{}) // allows all egress
		delete(np.Annotations, v1.ExportLossyAnnotation)
		w.must(c.Update(w.ctx, np))
		w.networkPolicy("podwall-deployment-web", "the edit reverted", func(np *networkingv1.NetworkPolicy) error {
			if len(np.Spec.Egress) != 2 || np.Annotations[v1.ExportLossyAnnotation] != lossy {
				return fmt.Errorf("egress %v, annotation %q", np.Spec.Egress, np.Annotations[v1.ExportLossyAnnotation])
			}
			return nil
		})
	})

	t.Run("a deleted NetworkPolicy is recreated", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		old := w.networkPolicy("podwall-deployment-web", "NetworkPolicy", func(*networkingv1.NetworkPolicy) error { return nil })
		w.must(c.Delete(w.ctx, old))
		w.networkPolicy("podwall-deployment-web", "a new NetworkPolicy", func(np *networkingv1.NetworkPolicy) error {
			if np.UID == old.UID {
				return errors.New("still the deleted one")
			}
			return specIs(wantSpec(map[string]string{"app": "db", "tier": "data"}))(np)
		})
	})

	t.Run("a NetworkPolicy the API server refuses is reported", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		long := "deployment-" + strings.Repeat("x", 240) // "podwall-" and this exceed an object name's 253 characters
		k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: long},
			Spec: spec("Deployment", "web", policy.Protect)})
		w.event(long, ReasonRefused, "the API server refused NetworkPolicy shop/podwall-"+long)
	})

	t.Run("leaving Protect deletes it", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		w.setMode("deployment-web", policy.Monitor)
		w.gone("podwall-deployment-web", "NetworkPolicy deleted in Monitor")
	})

	t.Run("a foreign NetworkPolicy of the name is left alone", func(t *testing.T) {
		w := world{t: t, c: c, ctx: w.ctx}
		foreign := k.Create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "podwall-deployment-db"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *selector(map[string]string{"team": "ops"})}}).(*networkingv1.NetworkPolicy)
		k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-db"},
			Spec: spec("Deployment", "db", policy.Protect)})
		w.event("deployment-db", ReasonConflict, "NetworkPolicy shop/podwall-deployment-db exists and podwall did not create it")
		var now networkingv1.NetworkPolicy
		w.must(c.Get(w.ctx, client.ObjectKeyFromObject(foreign), &now))
		if now.ResourceVersion != foreign.ResourceVersion || len(now.OwnerReferences) > 0 {
			t.Errorf("the foreign NetworkPolicy was changed: %+v", now)
		}
		// Leaving Protect does not delete what is not podwall's either.
		w.setMode("deployment-db", policy.Monitor)
		w.setMode("deployment-db", policy.Protect)
		w.event("deployment-db", ReasonConflict, "delete or rename it")
		w.must(c.Get(w.ctx, client.ObjectKeyFromObject(foreign), &now))
		if now.UID != foreign.UID || now.ResourceVersion != foreign.ResourceVersion {
			t.Errorf("the foreign NetworkPolicy was changed or replaced: %+v", now)
		}
		// Once it is gone, the name is podwall's.
		w.must(c.Delete(w.ctx, foreign))
		w.networkPolicy("podwall-deployment-db", "podwall's NetworkPolicy in the freed name", func(np *networkingv1.NetworkPolicy) error {
			if np.UID == foreign.UID || np.Labels["app.kubernetes.io/managed-by"] != "podwall" {
				return fmt.Errorf("not podwall's: %+v", np.ObjectMeta)
			}
			return nil
		})
	})
}
