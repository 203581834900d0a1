package learn

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
)

// identify names the owner of a reported address as a peer, reading the cache: the workload of a pod
// holding it, the Service whose cluster IP it is, the nodes, or else the address itself as a CIDR. A
// workload or Service in ns (the reporter's namespace) is named without a namespace.
func identify(ctx context.Context, r client.Reader, ns string, a netip.Addr) (v1.Peer, error) {
	ip := a.String()
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingFields{resolve.IPIndex: ip}); err != nil {
		return v1.Peer{}, fmt.Errorf("pods with IP %s: %w", ip, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue // a host-network pod's address is its node's
		}
		k, err := workload.Of(ctx, r, pod)
		if err != nil {
			return v1.Peer{}, err
		}
		peer := &v1.WorkloadPeer{WorkloadRef: v1.WorkloadRef{Kind: k.Kind, Name: k.Name}}
		if k.Namespace != ns {
			peer.Namespace = k.Namespace
		}
		return v1.Peer{Workload: peer}, nil
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.MatchingFields{resolve.IPIndex: ip}); err != nil {
		return v1.Peer{}, fmt.Errorf("services with IP %s: %w", ip, err)
	}
	if len(svcs.Items) > 0 {
		s := svcs.Items[0]
		peer := &v1.ServicePeer{Name: s.Name}
		if s.Namespace != ns {
			peer.Namespace = s.Namespace
		}
		return v1.Peer{Service: peer}, nil
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return v1.Peer{}, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		for _, na := range n.Status.Addresses {
			if na.Address == ip {
				return v1.Peer{Nodes: true}, nil
			}
		}
	}
	return v1.Peer{CIDR: netip.PrefixFrom(a, a.BitLen()).String()}, nil
}
