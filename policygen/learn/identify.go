package learn

import (
	"context"
	"net/netip"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/resolve"
)

// identify names the owner of a reported address as a peer, reading the cache (and api for a pod's
// owners the cache has not seen yet, so that a new Deployment's pod is not named as a bare pod): a
// workload, a Service, the nodes, or else, for an address nothing in the cluster holds, the DNS name
// the pod resolved it from (name, of an egress entry, if it is a valid name), or the address itself
// as a CIDR. A workload or Service in ns (the reporter's namespace) is named without a namespace, as a
// person would write it. An in-cluster peer is named by identity even when the pod reached it by a
// name: its addresses follow its pods, which a DNS answer's TTL would not.
func identify(ctx context.Context, r, api client.Reader, ns string, a netip.Addr, name string) (v1.Peer, error) {
	o, err := resolve.OwnerOf(ctx, r, api, a)
	if err != nil {
		return v1.Peer{}, err
	}
	inNS := func(namespace string) string {
		if namespace == ns {
			return ""
		}
		return namespace
	}
	switch o.Kind {
	case resolve.OwnerWorkload:
		return v1.Peer{Workload: &v1.WorkloadPeer{Namespace: inNS(o.Workload.Namespace),
			WorkloadRef: v1.WorkloadRef{Kind: o.Workload.Kind, Name: o.Workload.Name}}}, nil
	case resolve.OwnerService:
		return v1.Peer{Service: &v1.ServicePeer{Namespace: inNS(o.Service.Namespace), Name: o.Service.Name}}, nil
	case resolve.OwnerNodes:
		return v1.Peer{Nodes: true}, nil
	}
	if name != "" && policy.ValidateName(name) == nil {
		return v1.Peer{FQDN: name}, nil
	}
	return v1.Peer{CIDR: netip.PrefixFrom(a, a.BitLen()).String()}, nil
}
