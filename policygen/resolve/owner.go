package resolve

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/workload"
)

// OwnerKind is what holds an address.
type OwnerKind uint8

// The owners of an address; the zero value is no one in the cluster.
const (
	// OwnerExternal: nothing in the cluster holds the address.
	OwnerExternal OwnerKind = iota
	// OwnerWorkload: a live pod of the workload holds it as a pod IP.
	OwnerWorkload
	// OwnerService: it is the Service's cluster IP.
	OwnerService
	// OwnerNodes: it is one of a node's addresses, which host-network pods share.
	OwnerNodes
)

// Owner is who holds an address: the other end of a reported connection, the inverse of what
// resolving a peer yields.
type Owner struct {
	Kind OwnerKind
	// Addr is the address asked about.
	Addr netip.Addr
	// Workload is the owner when Kind is OwnerWorkload.
	Workload workload.Key
	// Service is the owner when Kind is OwnerService.
	Service types.NamespacedName
}

// String names the owner as the UI and logs show it: "namespace/Kind/name" for a workload,
// "namespace/Service/name", "nodes", or else the address.
func (o Owner) String() string {
	switch o.Kind {
	case OwnerWorkload:
		return o.Workload.String()
	case OwnerService:
		return o.Service.Namespace + "/Service/" + o.Service.Name
	case OwnerNodes:
		return "nodes"
	}
	return o.Addr.String()
}

// OwnerOf finds who holds a, reading r (a cache with the IPIndex): the verified workload of a pod
// holding it (workload.Of, with api, which may be nil, reading the owners r lacks), the Service whose
// cluster IP it is, the nodes, or else no one in the cluster. A host-network pod is skipped, its address
// being its node's, and so is a pod that has finished: its IP may already be another pod's.
func OwnerOf(ctx context.Context, r, api client.Reader, a netip.Addr) (Owner, error) {
	ip := a.String()
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingFields{IPIndex: ip}); err != nil {
		return Owner{}, fmt.Errorf("pods with IP %s: %w", ip, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		k, err := workload.Of(ctx, r, api, pod)
		if err != nil {
			return Owner{}, err
		}
		return Owner{Kind: OwnerWorkload, Addr: a, Workload: k}, nil
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.MatchingFields{IPIndex: ip}); err != nil {
		return Owner{}, fmt.Errorf("services with IP %s: %w", ip, err)
	}
	if len(svcs.Items) > 0 {
		s := &svcs.Items[0]
		return Owner{Kind: OwnerService, Addr: a, Service: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}}, nil
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return Owner{}, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		for _, na := range n.Status.Addresses {
			if na.Address == ip {
				return Owner{Kind: OwnerNodes, Addr: a}, nil
			}
		}
	}
	return Owner{Kind: OwnerExternal, Addr: a}, nil
}
