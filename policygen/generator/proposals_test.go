package generator

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// proposalWorld is a generator and a resolving hub on a real API server, an opted-in namespace
// "demo", and mallory, a namespace user there who may write Services, ConfigMaps, Pods and
// EndpointSlices but not WorkloadPolicies.
type proposalWorld struct {
	t       *testing.T
	admin   client.Client
	mallory client.Client
	hub     *resolve.Hub
}

func startProposalWorld(t *testing.T) *proposalWorld {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	var hub *resolve.Hub
	pgtest.Manager(t, cfg, func(mgr manager.Manager) error {
		if err := resolve.Index(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
		hub = resolve.NewHub(mgr.GetCache(), resolve.HubOptions{}, testr.New(t))
		if err := hub.Watch(ctx, mgr.GetCache()); err != nil {
			return err
		}
		if err := mgr.Add(hub); err != nil {
			return err
		}
		return New(mgr.GetClient(), Options{Events: mgr.GetEventRecorder("podwall-policygen")}).SetupWithManager(mgr)
	})
	pgtest.Namespace(t, c, "demo", map[string]string{InjectLabel: "enabled"})
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	mallory := k.NamespaceUser("demo", "mallory",
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services", "configmaps", "pods"}, Verbs: []string{"*"}},
		rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"*"}})
	return &proposalWorld{t: t, admin: c, mallory: mallory, hub: hub}
}

// await polls the policy until check passes and returns it.
func (w *proposalWorld) await(name, what string, check func(p *v1.WorkloadPolicy) error) *v1.WorkloadPolicy {
	w.t.Helper()
	var p v1.WorkloadPolicy
	testutil.Await(w.t, what, 10*time.Second, func() error {
		if err := w.admin.Get(context.Background(), types.NamespacedName{Namespace: "demo", Name: name}, &p); err != nil {
			return err
		}
		return check(&p)
	})
	return &p
}

// resolved is the egress or ingress rule id's addresses in the policy the workload's sidecars are served.
func (w *proposalWorld) resolved(wl, id string) ([]netip.Prefix, bool, error) {
	snap, release, err := w.hub.Acquire(context.Background(), workload.Key{Namespace: "demo", Kind: "Deployment", Name: wl})
	if err != nil {
		return nil, false, err
	}
	defer release()
	for _, r := range slices.Concat(snap.Policy.Ingress, snap.Policy.Egress) {
		if r.ID == id {
			return r.CIDRs, true, nil
		}
	}
	return nil, false, nil
}

// event waits for an Event of reason on the policy whose note contains want.
func (w *proposalWorld) event(policyName, reason, want string) {
	w.t.Helper()
	testutil.Await(w.t, "event "+reason, 10*time.Second, func() error {
		var list eventsv1.EventList
		if err := w.admin.List(context.Background(), &list, client.InNamespace("demo")); err != nil {
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

func rule(p []v1.Rule, name string) *v1.Rule {
	if i := slices.IndexFunc(p, func(r v1.Rule) bool { return r.Name == name }); i >= 0 {
		return &p[i]
	}
	return nil
}

func (w *proposalWorld) patch(obj client.Object, patch string) {
	w.t.Helper()
	if err := w.admin.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		w.t.Fatal(err)
	}
}

var anywhere = []v1.Peer{{CIDR: "0.0.0.0/0"}, {CIDR: "::/0"}}

// TestServiceDoesNotWidenProtect is the attack of a namespace user who may create Services: a Service
// selecting a workload in Protect would open ingress from anywhere on its ports. It becomes a proposal
// (status, Event), the spec and the policy served stay as they were, until someone who may edit the
// WorkloadPolicy accepts it; with autoAcceptManifestRules and in Learn it applies at once.
func TestServiceDoesNotWidenProtect(t *testing.T) {
	w := startProposalWorld(t)
	ctx := context.Background()
	if err := w.admin.Create(ctx, deployment("demo", "web")); err != nil {
		t.Fatal(err)
	}
	p := w.await("deployment-web", "the generated policy", func(p *v1.WorkloadPolicy) error {
		if rule(p.Spec.Ingress, "m-probes") == nil {
			return fmt.Errorf("no probe rule yet")
		}
		return nil
	})
	w.patch(p, `{"spec":{"mode":"Protect"}}`)
	protected := w.await("deployment-web", "Protect", func(p *v1.WorkloadPolicy) error {
		if p.Spec.Mode != policy.Protect {
			return fmt.Errorf("mode %s", p.Spec.Mode)
		}
		return nil
	})

	if err := w.mallory.Create(ctx, service("demo", "web", 80, intstr.FromString("http"))); err != nil {
		t.Fatalf("mallory creates a Service: %v", err)
	}
	p = w.await("deployment-web", "a proposal", func(p *v1.WorkloadPolicy) error {
		if p.Status.PendingProposals != 1 || len(p.Status.Proposals) != 1 {
			return fmt.Errorf("proposals %d %+v", p.Status.PendingProposals, p.Status.Proposals)
		}
		return nil
	})
	pr := p.Status.Proposals[0]
	want := v1.Proposal{Name: pr.Name, Direction: "ingress", Source: "Service demo/web selects this workload", Since: pr.Since,
		Rule: v1.Rule{Name: "m-svc-web", Origin: "manifest", Peers: anywhere, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}}
	if d := cmp.Diff(want, pr); d != "" || pr.Since.IsZero() || !strings.HasPrefix(pr.Name, "ingress-m-svc-web-") {
		t.Errorf("proposal (-want +got):\n%s (since %v)", d, pr.Since)
	}
	if d := cmp.Diff(protected.Spec, p.Spec); d != "" {
		t.Errorf("the Service changed the Protect spec (-before +after):\n%s", d)
	}
	w.event("deployment-web", ReasonProposed, "Service demo/web selects this workload: the ingress rule m-svc-web would widen")
	if _, found, err := w.resolved("web", "ingress/m-svc-web"); err != nil || found {
		t.Errorf("served policy has the Service's rule (found %v, err %v)", found, err)
	}

	// mallory cannot accept it: that takes the right to edit the WorkloadPolicy.
	err := w.mallory.Patch(ctx, p, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+v1.AcceptProposalsAnnotation+`":"all"}}}`)))
	if !apierrors.IsForbidden(err) {
		t.Errorf("mallory accepting: err %v, want forbidden", err)
	}

	// Someone who may edit it accepts it by name: the rule is written, the annotation consumed.
	w.patch(p, `{"metadata":{"annotations":{"`+v1.AcceptProposalsAnnotation+`":"`+pr.Name+`"}}}`)
	w.await("deployment-web", "the accepted rule", func(p *v1.WorkloadPolicy) error {
		r := rule(p.Spec.Ingress, "m-svc-web")
		if r == nil || p.Status.PendingProposals != 0 || len(p.Status.Proposals) != 0 {
			return fmt.Errorf("rule %v, proposals %+v", r, p.Status.Proposals)
		}
		if d := cmp.Diff(pr.Rule, *r); d != "" {
			return fmt.Errorf("rule (-proposed +written):\n%s", d)
		}
		if _, ok := p.Annotations[v1.AcceptProposalsAnnotation]; ok {
			return fmt.Errorf("annotation not consumed")
		}
		return nil
	})
	w.event("deployment-web", ReasonAccepted, "accepted "+pr.Name)
	testutil.Await(t, "the accepted rule served", 10*time.Second, func() error {
		cidrs, found, err := w.resolved("web", "ingress/m-svc-web")
		if err != nil || !found || !slices.Contains(cidrs, netip.MustParsePrefix("0.0.0.0/0")) {
			return fmt.Errorf("served %v found %v err %v", cidrs, found, err)
		}
		return nil
	})

	// A wider Service (another port) is a new proposal; the accepted part stays.
	var svc corev1.Service
	if err := w.mallory.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "admin", Protocol: "TCP", Port: 9000, TargetPort: intstr.FromInt32(9000)})
	svc.Spec.Ports[0].Name = "http"
	if err := w.mallory.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	p = w.await("deployment-web", "the wider proposal", func(p *v1.WorkloadPolicy) error {
		if len(p.Status.Proposals) != 1 || len(p.Status.Proposals[0].Rule.Ports) != 2 {
			return fmt.Errorf("proposals %+v", p.Status.Proposals)
		}
		return nil
	})
	if r := rule(p.Spec.Ingress, "m-svc-web"); r == nil || len(r.Ports) != 1 {
		t.Errorf("spec rule %+v, want the accepted port alone", r)
	}
	// An accept naming what is no longer pending accepts nothing, and says so.
	w.patch(p, `{"metadata":{"annotations":{"`+v1.AcceptProposalsAnnotation+`":"`+pr.Name+`"}}}`)
	w.event("deployment-web", ReasonNotProposed, pr.Name+", which is not pending")
	p = w.await("deployment-web", "the stale accept consumed", func(p *v1.WorkloadPolicy) error {
		if _, ok := p.Annotations[v1.AcceptProposalsAnnotation]; ok {
			return fmt.Errorf("annotation not consumed")
		}
		return nil
	})
	if r := rule(p.Spec.Ingress, "m-svc-web"); r == nil || len(r.Ports) != 1 || len(p.Status.Proposals) != 1 {
		t.Errorf("spec rule %+v, proposals %d after a stale accept: want the accepted port alone and the proposal pending", r, len(p.Status.Proposals))
	}

	// autoAcceptManifestRules lets it in.
	w.patch(p, `{"spec":{"autoAcceptManifestRules":true}}`)
	w.await("deployment-web", "auto-accepted", func(p *v1.WorkloadPolicy) error {
		if r := rule(p.Spec.Ingress, "m-svc-web"); r == nil || len(r.Ports) != 2 || len(p.Status.Proposals) != 0 {
			return fmt.Errorf("rule %+v proposals %+v", r, p.Status.Proposals)
		}
		return nil
	})

	// In Learn a Service applies as it always did.
	if err := w.admin.Create(ctx, deployment("demo", "api")); err != nil {
		t.Fatal(err)
	}
	w.await("deployment-api", "the api policy", func(*v1.WorkloadPolicy) error { return nil })
	if err := w.mallory.Create(ctx, service("demo", "api", 80, intstr.FromString("http"))); err != nil {
		t.Fatal(err)
	}
	w.await("deployment-api", "the Service's rule in Learn", func(p *v1.WorkloadPolicy) error {
		if rule(p.Spec.Ingress, "m-svc-api") == nil || len(p.Status.Proposals) != 0 {
			return fmt.Errorf("ingress %+v proposals %+v", p.Spec.Ingress, p.Status.Proposals)
		}
		return nil
	})
}

// TestEndpointSliceDoesNotWidenProtect: a Service without a selector forwards wherever EndpointSlices
// point. A namespace user who may write both points one the workload's env names at an address in
// another namespace's range: in Protect that is a proposal, and the policy served allows neither the
// address nor the Service's cluster IP, which would forward there.
func TestEndpointSliceDoesNotWidenProtect(t *testing.T) {
	w := startProposalWorld(t)
	ctx := context.Background()
	d := deployment("demo", "web", corev1.EnvVar{Name: "DB_HOST", Value: "db"})
	d.Spec.Template.Spec.Containers[0].Ports = nil
	d.Spec.Template.Spec.Containers[0].ReadinessProbe = nil
	if err := w.admin.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	p := w.await("deployment-web", "the generated policy", func(p *v1.WorkloadPolicy) error {
		if rule(p.Spec.Egress, "m-dns") == nil {
			return fmt.Errorf("no DNS rule yet")
		}
		return nil
	})
	w.patch(p, `{"spec":{"mode":"Protect"}}`)
	w.await("deployment-web", "Protect", func(p *v1.WorkloadPolicy) error {
		if p.Spec.Mode != policy.Protect {
			return fmt.Errorf("mode %s", p.Spec.Mode)
		}
		return nil
	})

	db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "db"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Protocol: "TCP", Port: 5432}}}}
	if err := w.mallory.Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	p = w.await("deployment-web", "the Service's proposal", func(p *v1.WorkloadPolicy) error {
		if len(p.Status.Proposals) != 1 {
			return fmt.Errorf("proposals %+v", p.Status.Proposals)
		}
		return nil
	})
	if got, want := p.Status.Proposals[0].Source, "env DB_HOST of container app names Service demo/db (no selector: its EndpointSlices point at no address)"; got != want {
		t.Errorf("source %q, want %q", got, want)
	}
	w.patch(p, `{"metadata":{"annotations":{"`+v1.AcceptProposalsAnnotation+`":"all"}}}`)
	p = w.await("deployment-web", "the accepted rule", func(p *v1.WorkloadPolicy) error {
		if rule(p.Spec.Egress, "m-svc-db") == nil || len(p.Status.Proposals) != 0 {
			return fmt.Errorf("egress %+v proposals %+v", p.Spec.Egress, p.Status.Proposals)
		}
		return nil
	})
	accepted := p.Spec
	clusterIP := netip.MustParsePrefix(db.Spec.ClusterIP + "/32")
	testutil.Await(t, "the cluster IP served", 10*time.Second, func() error {
		if cidrs, _, err := w.resolved("web", "egress/m-svc-db"); err != nil || !slices.Equal(cidrs, []netip.Prefix{clusterIP}) {
			return fmt.Errorf("served %v err %v", cidrs, err)
		}
		return nil
	})

	// mallory points the Service at an address outside the namespace.
	if err := w.mallory.Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "db-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: "db"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.99.0.5"}}}}); err != nil {
		t.Fatal(err)
	}
	p = w.await("deployment-web", "the endpoint's proposal", func(p *v1.WorkloadPolicy) error {
		if len(p.Status.Proposals) != 1 || !strings.Contains(p.Status.Proposals[0].Source, "point at 10.99.0.5") {
			return fmt.Errorf("proposals %+v", p.Status.Proposals)
		}
		return nil
	})
	if d := cmp.Diff(accepted, p.Spec); d != "" {
		t.Errorf("the EndpointSlice changed the Protect spec (-before +after):\n%s", d)
	}
	w.event("deployment-web", ReasonProposed, "point at 10.99.0.5")
	testutil.Await(t, "neither the address nor the cluster IP served", 10*time.Second, func() error {
		cidrs, found, err := w.resolved("web", "egress/m-svc-db")
		if err != nil || !found || len(cidrs) != 0 {
			return fmt.Errorf("served %v found %v err %v", cidrs, found, err)
		}
		return nil
	})
}
