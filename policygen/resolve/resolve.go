// Package resolve turns a WorkloadPolicy into the sidecar's contract, api/policy.Policy: peers named
// by workload, selector, Service or nodes become the addresses those name right now, read from the
// informer cache; DNS names (fqdn peers) stay names (Rule.Names), whose addresses the sidecar learns
// from the pod's own DNS answers; each rule keeps a stable id. A Service without a selector resolves
// through its EndpointSlices, and a peer that pins its endpoint addresses keeps the cluster IP only
// while the slices point nowhere else (see selectorless). Hub keeps the resolved form of the workloads someone is
// asking for, recomputes it when the objects it was built from change, and gives it a new revision only
// when the resolved form itself changed. OwnerOf goes the other way, from a reported address to who
// holds it, for the learner and the live view alike.
package resolve

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/manifest"
	"podwall.io/podwall/policygen/workload"
)

// deps records what a resolved policy was built from, so that a change elsewhere does not recompute it.
// (The policy object itself is matched by its workload, not through deps.)
type deps struct {
	namespaces   map[string]bool       // any pod or Service here (Service and selector peers)
	workloads    map[workload.Key]bool // these workloads' pods and owner objects (workload peers)
	anyNamespace bool                  // a namespace selector: namespace labels and every namespace's pods
	nodes        bool
}

func newDeps() deps {
	return deps{namespaces: map[string]bool{}, workloads: map[workload.Key]bool{}}
}

// everything is what an entry depends on while it is being resolved.
var everything = deps{anyNamespace: true, nodes: true}

// resolver resolves one policy against a cache.
type resolver struct {
	ctx   context.Context
	r     client.Reader
	ns    string
	deps  deps
	names map[netip.Addr]string
}

// Resolve returns wp's resolved form (revision 0) and what it depends on.
func resolvePolicy(ctx context.Context, r client.Reader, wp *v1alpha1.WorkloadPolicy) (*policy.Policy, deps, error) {
	rs := &resolver{ctx: ctx, r: r, ns: wp.Namespace, deps: newDeps(), names: map[netip.Addr]string{}}
	mode := policy.Mode(wp.Spec.Mode)
	if mode == "" {
		mode = policy.Learn
	}
	p := &policy.Policy{Namespace: wp.Namespace, Workload: wp.Spec.Workload.Kind + "/" + wp.Spec.Workload.Name, Mode: mode,
		RestrictDNS: wp.Spec.RestrictDNS}
	var err error
	if p.Ingress, err = rs.rules("ingress", wp.Spec.Ingress); err != nil {
		return nil, deps{}, err
	}
	if p.Egress, err = rs.rules("egress", wp.Spec.Egress); err != nil {
		return nil, deps{}, err
	}
	for _, l := range wp.Spec.Loopback {
		p.Loopback = append(p.Loopback, policy.LoopbackRule{
			ID: "loopback/" + l.Name, Origin: policy.Origin(origin(l.Origin)), Action: policy.Action(l.Action), Ports: ports(l.Ports),
		})
	}
	if len(rs.names) > 0 {
		p.Names = rs.names
	}
	if err := p.Validate(); err != nil {
		return nil, deps{}, fmt.Errorf("resolved policy: %w", err)
	}
	return p, rs.deps, nil
}

func origin(o policy.Origin) policy.Origin {
	if o == "" {
		return policy.OriginUser
	}
	return o
}

func (rs *resolver) rules(dir string, in []v1alpha1.Rule) ([]policy.Rule, error) {
	var out []policy.Rule
	for _, r := range in {
		pr := policy.Rule{ID: dir + "/" + r.Name, Origin: policy.Origin(origin(r.Origin)), Ports: ports(r.Ports)}
		var peerNames []string
		for _, peer := range r.Peers {
			if peer.FQDN != "" {
				// A name is no address: the sidecar learns its addresses from the pod's DNS answers.
				peerNames = append(peerNames, policy.NamePeer(peer.FQDN))
				pr.Names = append(pr.Names, peer.FQDN)
				continue
			}
			name, cidrs, err := rs.peer(peer)
			if err != nil {
				return nil, fmt.Errorf("%s rule %s: %w", dir, r.Name, err)
			}
			peerNames = append(peerNames, name)
			pr.CIDRs = append(pr.CIDRs, cidrs...)
		}
		pr.Peer = strings.Join(peerNames, ",")
		slices.SortFunc(pr.CIDRs, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
		pr.CIDRs = slices.Compact(pr.CIDRs)
		slices.Sort(pr.Names)
		pr.Names = slices.Compact(pr.Names)
		if pr.CIDRs == nil {
			pr.CIDRs = []netip.Prefix{} // a peer that resolves to nothing allows nothing, and says so
		}
		out = append(out, pr)
	}
	return out, nil
}

func ports(in []v1alpha1.Port) []policy.PortRange {
	var out []policy.PortRange
	for _, p := range in {
		proto := policy.Protocol(p.Protocol)
		if proto == "" {
			proto = policy.TCP
		}
		pr := policy.PortRange{Protocol: proto, Port: uint16(p.Port), EndPort: uint16(p.EndPort)}
		for _, typ := range p.Types {
			pr.Types = append(pr.Types, uint16(typ))
		}
		out = append(out, pr)
	}
	return out
}

// peer resolves one peer to its display name and addresses.
func (rs *resolver) peer(p v1alpha1.Peer) (string, []netip.Prefix, error) {
	switch {
	case p.CIDR != "":
		pfx, err := netip.ParsePrefix(p.CIDR)
		if err != nil {
			return "", nil, fmt.Errorf("cidr %q: %w", p.CIDR, err)
		}
		return "cidr:" + pfx.String(), []netip.Prefix{pfx.Masked()}, nil
	case p.Workload != nil:
		ns := cmp.Or(p.Workload.Namespace, rs.ns)
		key := workload.Key{Namespace: ns, Kind: p.Workload.Kind, Name: p.Workload.Name}
		pods, err := rs.workloadPods(key)
		return "workload:" + key.String(), rs.podAddrs(pods), err
	case p.Service != nil:
		return rs.service(cmp.Or(p.Service.Namespace, rs.ns), p.Service)
	case p.Selector != nil:
		pods, err := rs.selectorPods(p.Selector)
		return "selector:" + selectorString(p.Selector), rs.podAddrs(pods), err
	case p.Nodes:
		return rs.nodes()
	}
	return "", nil, fmt.Errorf("peer names nothing")
}

// service resolves a Service peer to its cluster IPs and the pods its selector matches or, for a
// Service without a selector, the addresses its EndpointSlices list (see selectorless).
func (rs *resolver) service(ns string, peer *v1alpha1.ServicePeer) (string, []netip.Prefix, error) {
	rs.deps.namespaces[ns] = true
	name := peer.Name
	display := "service:" + ns + "/" + name
	var svc corev1.Service
	if err := rs.r.Get(rs.ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
		return display, nil, client.IgnoreNotFound(err)
	}
	var out []netip.Prefix
	for _, ip := range svc.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if len(svc.Spec.Selector) == 0 {
		var err error
		if out, err = rs.selectorless(&svc, peer.Endpoints, out); err != nil {
			return "", nil, err
		}
	}
	for _, p := range out {
		rs.names[p.Addr()] = display
	}
	if len(svc.Spec.Selector) == 0 {
		return display, out, nil
	}
	var pods corev1.PodList
	if err := rs.r.List(rs.ctx, &pods, client.InNamespace(ns), client.MatchingLabels(svc.Spec.Selector)); err != nil {
		return "", nil, fmt.Errorf("list pods of service %s/%s: %w", ns, name, err)
	}
	return display, append(out, rs.podAddrs(pods.Items)...), nil
}

// selectorless resolves a Service without a selector from its cluster IPs. They forward wherever its
// EndpointSlices point, and whoever may write EndpointSlices in its namespace points them: so the
// peer resolves to the slices' addresses too (the verdict log names them after the Service), and,
// when the peer pins endpoint addresses, to only those of them it pins, and to the cluster IPs only
// while the slices list no address outside the pin. Otherwise a hand-written EndpointSlice would
// widen, through the cluster IP, a rule that names the Service.
func (rs *resolver) selectorless(svc *corev1.Service, pin *v1alpha1.ServiceEndpoints, clusterIPs []netip.Prefix) ([]netip.Prefix, error) {
	var list discoveryv1.EndpointSliceList
	if err := rs.r.List(rs.ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, fmt.Errorf("list endpointslices of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	var out []netip.Prefix
	outside := false
	for _, a := range manifest.EndpointAddresses(list.Items) {
		if pin != nil && !slices.Contains(pin.Addresses, v1alpha1.IPAddress(a.String())) {
			outside = true
			continue
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if outside {
		return out, nil
	}
	return append(clusterIPs, out...), nil
}

func (rs *resolver) nodes() (string, []netip.Prefix, error) {
	rs.deps.nodes = true
	var nodes corev1.NodeList
	if err := rs.r.List(rs.ctx, &nodes); err != nil {
		return "", nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []netip.Prefix
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
				rs.names[ip] = "node:" + n.Name
			}
		}
	}
	return "nodes", out, nil
}

func (rs *resolver) selectorPods(s *v1alpha1.SelectorPeer) ([]corev1.Pod, error) {
	podSel, err := s.PodSelector.AsSelector()
	if err != nil {
		return nil, fmt.Errorf("pod selector: %w", err)
	}
	namespaces := []string{rs.ns}
	if name, ok := s.NamespaceSelector.NamespaceName(); ok {
		// The API server sets this label to each namespace's name and keeps it so: no other namespace
		// matches, whatever labels change, and the entry depends on that namespace's pods alone.
		namespaces = []string{name}
	} else if s.NamespaceSelector != nil {
		rs.deps.anyNamespace = true
		nsSel, err := s.NamespaceSelector.AsSelector()
		if err != nil {
			return nil, fmt.Errorf("namespace selector: %w", err)
		}
		var list corev1.NamespaceList
		if err := rs.r.List(rs.ctx, &list, client.MatchingLabelsSelector{Selector: nsSel}); err != nil {
			return nil, fmt.Errorf("list namespaces: %w", err)
		}
		namespaces = namespaces[:0]
		for _, n := range list.Items {
			namespaces = append(namespaces, n.Name)
		}
	}
	for _, ns := range namespaces {
		rs.deps.namespaces[ns] = true
	}
	var pods []corev1.Pod
	for _, ns := range namespaces {
		var list corev1.PodList
		if err := rs.r.List(rs.ctx, &list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: podSel}); err != nil {
			return nil, fmt.Errorf("list pods in %s: %w", ns, err)
		}
		pods = append(pods, list.Items...)
	}
	return pods, nil
}

func selectorString(s *v1alpha1.SelectorPeer) string {
	var parts []string
	if s.NamespaceSelector != nil {
		sel, _ := s.NamespaceSelector.AsSelector()
		parts = append(parts, "namespace("+sel.String()+")")
	}
	if s.PodSelector != nil {
		sel, _ := s.PodSelector.AsSelector()
		parts = append(parts, "pod("+sel.String()+")")
	}
	return strings.ReplaceAll(strings.Join(parts, ","), " ", "")
}

// workloadPods lists a workload's pods (WorkloadPods); the entry depends on them. Owners are verified
// against the cache alone, which may not hold a new ReplicaSet or Deployment yet: the event that
// brings it dirties this workload (Hub.ownersOf), and the next resolution counts the pod.
func (rs *resolver) workloadPods(k workload.Key) ([]corev1.Pod, error) {
	rs.deps.workloads[k] = true
	return WorkloadPods(rs.ctx, rs.r, k)
}

// WorkloadPods lists a workload's pods from r, a cache with Index's indexes, through the controller
// index: a Deployment's through its ReplicaSets, a CronJob's through its Jobs. The index holds
// controllers as claimed; a pod counts only if the workload is among its verified owners
// (workload.Owners), so a pod whose creator wrote another workload's controller into it does not pass
// for that workload's. Finished and terminating pods are listed too.
func WorkloadPods(ctx context.Context, r client.Reader, k workload.Key) ([]corev1.Pod, error) {
	if k.Kind == "Pod" {
		var pod corev1.Pod
		if err := r.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.Name}, &pod); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		return []corev1.Pod{pod}, nil
	}
	owners := []string{k.Kind + "/" + k.Name}
	var middle client.ObjectList
	var middleKind string
	switch k.Kind {
	case "Deployment":
		middle, middleKind = &appsv1.ReplicaSetList{}, "ReplicaSet"
	case "CronJob":
		middle, middleKind = &batchv1.JobList{}, "Job"
	}
	if middle != nil {
		if err := r.List(ctx, middle, client.InNamespace(k.Namespace), client.MatchingFields{ControllerIndex: owners[0]}); err != nil {
			return nil, fmt.Errorf("list children of %s: %w", k, err)
		}
		objs, _ := meta.ExtractList(middle)
		owners = owners[:0]
		for _, o := range objs {
			owners = append(owners, middleKind+"/"+o.(client.Object).GetName())
		}
	}
	var pods []corev1.Pod
	for _, owner := range owners {
		var list corev1.PodList
		if err := r.List(ctx, &list, client.InNamespace(k.Namespace), client.MatchingFields{ControllerIndex: owner}); err != nil {
			return nil, fmt.Errorf("list pods of %s: %w", k, err)
		}
		for i := range list.Items {
			verified, err := workload.Owners(ctx, r, nil, &list.Items[i])
			if err != nil {
				return nil, err
			}
			if slices.Contains(verified, k) {
				pods = append(pods, list.Items[i])
			}
		}
	}
	return pods, nil
}

// podAddrs returns the addresses of the pods that hold theirs (not finished), naming each after the
// pod's workload for the verdict log.
func (rs *resolver) podAddrs(pods []corev1.Pod) []netip.Prefix {
	var out []netip.Prefix
	for i := range pods {
		pod := &pods[i]
		if !Live(pod) {
			continue
		}
		for _, ip := range pod.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			if _, named := rs.names[a]; !named {
				rs.names[a] = "workload:" + rs.workloadOf(pod).String()
			}
		}
	}
	return out
}

// Live says the pod holds its addresses: it has not finished and is not terminating.
func Live(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && pod.DeletionTimestamp == nil
}

// workloadOf is the pod's verified workload, for the verdict log; a pod whose owners the cache cannot
// read now (an error only a failing cache gives) is named as itself.
func (rs *resolver) workloadOf(pod *corev1.Pod) workload.Key {
	k, err := workload.Of(rs.ctx, rs.r, nil, pod)
	if err != nil {
		return workload.Key{Namespace: pod.Namespace, Kind: "Pod", Name: pod.Name}
	}
	return k
}
