package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// Gate decides, for one direction ("ingress" or "egress") of a policy in Protect, which derived
// manifest rules go into the spec now and which wait as proposals. A derived rule that the spec's
// manifest rule of its name already covers (the same or fewer peers, ports and endpoint addresses)
// only tightens: it is written. One that adds a rule, a peer, a port or an endpoint address waits,
// unless accepted says its proposal's name was accepted; meanwhile the spec keeps the part of the old
// rule the new one still allows, so that what a change takes away goes at once. Manifest rules
// nothing derives any more are removed (they are not returned). A rule whose name another origin's
// rule holds is neither written nor proposed: that rule wins (ReplaceOrigin).
func Gate(direction string, current, derived []v1.Rule, sources map[string]string, accepted func(name string) bool) ([]v1.Rule, []v1.Proposal) {
	var apply []v1.Rule
	var proposals []v1.Proposal
	for _, d := range derived {
		i := slices.IndexFunc(current, func(r v1.Rule) bool { return r.Name == d.Name })
		var old *v1.Rule
		if i >= 0 {
			if current[i].Origin != policy.OriginManifest {
				continue
			}
			old = &current[i]
		}
		name := ProposalName(direction, d)
		if (old != nil && Covers(*old, d)) || accepted(name) {
			apply = append(apply, d)
			continue
		}
		proposals = append(proposals, v1.Proposal{Name: name, Direction: direction, Rule: d, Source: sources[SourceKey(direction, d.Name)]})
		if old != nil {
			if kept, ok := narrow(*old, d); ok {
				apply = append(apply, kept)
			}
		}
	}
	return apply, proposals
}

// ProposalName names a derived rule's content: "<direction>-<rule>-<8 hex digits of its hash>".
func ProposalName(direction string, r v1.Rule) string {
	b, _ := json.Marshal(r) // a Rule always encodes
	sum := sha256.Sum256(b)
	return direction + "-" + r.Name + "-" + hex.EncodeToString(sum[:4])
}

// Covers reports whether rule a allows everything rule b does: each of b's peers within one of a's,
// each of b's ports within one of a's (no ports: every port).
func Covers(a, b v1.Rule) bool {
	for _, p := range b.Peers {
		if !slices.ContainsFunc(a.Peers, func(q v1.Peer) bool { return peerCovers(q, p) }) {
			return false
		}
	}
	if len(a.Ports) == 0 {
		return true
	}
	if len(b.Ports) == 0 {
		return false
	}
	for _, p := range b.Ports {
		if !slices.ContainsFunc(a.Ports, func(q v1.Port) bool { return portCovers(q, p) }) {
			return false
		}
	}
	return true
}

// peerCovers reports whether peer a names every address peer b does, as far as the peers say.
func peerCovers(a, b v1.Peer) bool {
	switch {
	case equality.Semantic.DeepEqual(a, b):
		return true
	case a.CIDR != "" && b.CIDR != "":
		pa, errA := netip.ParsePrefix(a.CIDR)
		pb, errB := netip.ParsePrefix(b.CIDR)
		return errA == nil && errB == nil && pa.Bits() <= pb.Bits() && pa.Contains(pb.Addr())
	case a.Service != nil && b.Service != nil && a.Service.Namespace == b.Service.Namespace && a.Service.Name == b.Service.Name:
		if a.Service.Endpoints == nil {
			return true
		}
		return b.Service.Endpoints != nil && subset(b.Service.Endpoints.Addresses, a.Service.Endpoints.Addresses)
	}
	return false
}

func subset[T comparable](small, big []T) bool {
	for _, x := range small {
		if !slices.Contains(big, x) {
			return false
		}
	}
	return true
}

// portCovers reports whether port entry a allows everything entry b does.
func portCovers(a, b v1.Port) bool {
	if a.Protocol != b.Protocol {
		return false
	}
	if a.Port == 0 && len(a.Types) == 0 {
		return true // the whole protocol
	}
	if len(a.Types) > 0 || len(b.Types) > 0 {
		return len(b.Types) > 0 && subset(b.Types, a.Types)
	}
	return b.Port != 0 && a.Port <= b.Port && max(b.Port, b.EndPort) <= max(a.Port, a.EndPort)
}

// narrow is the part of old that derived still allows, ok false when nothing is left: derived's peers
// and ports that old covers, old's that derived covers, and a pinned Service's endpoint addresses that
// both accept.
func narrow(old, derived v1.Rule) (v1.Rule, bool) {
	out := v1.Rule{Name: old.Name, Origin: old.Origin}
	for _, p := range derived.Peers {
		for _, q := range old.Peers {
			if kept, ok := peerMeet(q, p); ok && !slices.ContainsFunc(out.Peers, func(x v1.Peer) bool { return equality.Semantic.DeepEqual(x, kept) }) {
				out.Peers = append(out.Peers, kept)
			}
		}
	}
	switch {
	case len(old.Ports) == 0:
		out.Ports = derived.Ports
	case len(derived.Ports) == 0:
		out.Ports = old.Ports
	default:
		for _, p := range derived.Ports {
			if slices.ContainsFunc(old.Ports, func(q v1.Port) bool { return portCovers(q, p) }) {
				out.Ports = append(out.Ports, p)
			}
		}
		for _, p := range old.Ports {
			if slices.ContainsFunc(derived.Ports, func(q v1.Port) bool { return portCovers(q, p) }) {
				out.Ports = append(out.Ports, p)
			}
		}
		if len(out.Ports) == 0 {
			return v1.Rule{}, false // no port left; an empty list would mean every port
		}
		out.Ports = NormalizePorts(out.Ports)
	}
	return out, len(out.Peers) > 0
}

// peerMeet is what both peers name, when one of them covers the other or both pin one Service.
func peerMeet(a, b v1.Peer) (v1.Peer, bool) {
	switch {
	case peerCovers(a, b):
		return b, true
	case peerCovers(b, a):
		return a, true
	case a.Service != nil && b.Service != nil && a.Service.Namespace == b.Service.Namespace && a.Service.Name == b.Service.Name:
		// Both pinned (an unpinned one covers the other): the addresses both accept.
		s := *b.Service
		s.Endpoints = &v1.ServiceEndpoints{}
		for _, x := range b.Service.Endpoints.Addresses {
			if slices.Contains(a.Service.Endpoints.Addresses, x) {
				s.Endpoints.Addresses = append(s.Endpoints.Addresses, x)
			}
		}
		return v1.Peer{Service: &s}, true
	}
	return v1.Peer{}, false
}
