package manifest

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	v1 "podwall.io/podwall/api/v1alpha1"
)

// MaxEndpoints is how many endpoint addresses a Service peer pins (the API's bound). A Service whose
// EndpointSlices list more keeps the lowest; its cluster IPs then resolve to nothing (see
// v1alpha1.ServicePeer.Endpoints), which fails closed.
const MaxEndpoints = 64

// endpointsOf pins a Service without a selector to the addresses its EndpointSlices list now. Nothing
// controls these slices but whoever may write EndpointSlices in that namespace, and the Service's
// cluster IP forwards wherever they point: pinning makes a change of them a change of the rule, which
// in Protect waits as a proposal when it widens the rule.
func endpointsOf(svc *corev1.Service, all []discoveryv1.EndpointSlice) *v1.ServiceEndpoints {
	var own []discoveryv1.EndpointSlice
	for _, es := range all {
		if es.Namespace == svc.Namespace && es.Labels[discoveryv1.LabelServiceName] == svc.Name {
			own = append(own, es)
		}
	}
	addrs := EndpointAddresses(own)
	out := &v1.ServiceEndpoints{}
	for _, a := range addrs[:min(len(addrs), MaxEndpoints)] {
		out.Addresses = append(out.Addresses, v1.IPAddress(a.String()))
	}
	return out
}

// EndpointAddresses are the addresses of a Service's EndpointSlices (those labelled
// kubernetes.io/service-name with its name, in its namespace) that traffic may be sent to: of IPv4
// and IPv6 slices, of endpoints not marked unready; sorted, without duplicates.
func EndpointAddresses(own []discoveryv1.EndpointSlice) []netip.Addr {
	var addrs []netip.Addr
	for _, es := range own {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					addrs = append(addrs, ip.Unmap())
				}
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

func addressList(addrs []v1.IPAddress) string {
	if len(addrs) == 0 {
		return "no address"
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}
