package ui

import (
	"fmt"
	"strings"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

// RuleGroup is one origin's rules in plain words.
type RuleGroup struct {
	Origin policy.Origin `json:"origin"`
	Rules  []string      `json:"rules"`
}

// origins is the order groups are shown in: what the manifest implies, what was learned, what people wrote.
var origins = []policy.Origin{policy.OriginManifest, policy.OriginLearned, policy.OriginUser}

// Describe states a policy's rules in plain words, grouped by origin; every origin has a group, empty
// or not, so that "nothing learned yet" is visible.
func Describe(spec *v1.WorkloadPolicySpec) []RuleGroup {
	byOrigin := map[policy.Origin][]string{}
	for _, r := range spec.Ingress {
		byOrigin[originOf(r.Origin)] = append(byOrigin[originOf(r.Origin)], RuleInWords("ingress", r))
	}
	for _, r := range spec.Egress {
		byOrigin[originOf(r.Origin)] = append(byOrigin[originOf(r.Origin)], RuleInWords("egress", r))
	}
	for _, l := range spec.Loopback {
		verb := "Allow"
		if l.Action == "deny" {
			verb = "Forbid"
		}
		byOrigin[originOf(l.Origin)] = append(byOrigin[originOf(l.Origin)],
			fmt.Sprintf("%s the pod's own processes to reach its local %s (%s).", verb, strings.TrimPrefix(portsInWords(l.Ports), "on "), l.Name))
	}
	groups := make([]RuleGroup, 0, len(origins))
	for _, o := range origins {
		groups = append(groups, RuleGroup{Origin: o, Rules: append([]string{}, byOrigin[o]...)})
	}
	return groups
}

// RuleInWords states an ingress or egress rule in plain words.
func RuleInWords(direction string, r v1.Rule) string {
	way := "to"
	if direction == "ingress" {
		way = "from"
	}
	return fmt.Sprintf("Allow connections %s %s %s (%s).", way, peersInWords(r.Peers), portsInWords(r.Ports), r.Name)
}

// originOf is the origin the API server defaults an empty one to.
func originOf(o policy.Origin) policy.Origin {
	if o == "" {
		return policy.OriginUser
	}
	return o
}

// CountByOrigin counts a policy's rules of each origin.
func CountByOrigin(spec *v1.WorkloadPolicySpec) map[policy.Origin]int {
	n := map[policy.Origin]int{policy.OriginManifest: 0, policy.OriginLearned: 0, policy.OriginUser: 0}
	for _, r := range spec.Ingress {
		n[originOf(r.Origin)]++
	}
	for _, r := range spec.Egress {
		n[originOf(r.Origin)]++
	}
	for _, l := range spec.Loopback {
		n[originOf(l.Origin)]++
	}
	return n
}

func peersInWords(peers []v1.Peer) string {
	var out []string
	for _, p := range peers {
		name := PeerName(p)
		if p.Service != nil && p.Service.Endpoints != nil {
			addrs := "no address"
			if len(p.Service.Endpoints.Addresses) > 0 {
				addrs = strings.Trim(strings.ReplaceAll(fmt.Sprint(p.Service.Endpoints.Addresses), " ", ", "), "[]")
			}
			name += " (while its EndpointSlices point at " + addrs + " only)"
		}
		out = append(out, name)
	}
	return strings.Join(out, " or ")
}

// PeerName names a peer the way the UI shows it (and the graph keys its nodes).
func PeerName(p v1.Peer) string {
	switch {
	case p.Workload != nil:
		return inNS(p.Workload.Namespace, p.Workload.Kind+" "+p.Workload.Name)
	case p.Service != nil:
		return inNS(p.Service.Namespace, "Service "+p.Service.Name)
	case p.CIDR != "":
		return "addresses " + p.CIDR
	case p.Nodes:
		return "the cluster's nodes"
	case p.Selector != nil:
		return selectorInWords(p.Selector)
	case p.FQDN != "":
		return nameInWords(p.FQDN)
	}
	return "nobody"
}

// nameInWords says "the name api.stripe.com" or, for a wildcard, "any name one label under
// example.com", which is exactly what it matches (neither example.com itself nor deeper names).
func nameInWords(pattern string) string {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		return "any name one label under " + rest
	}
	return "the name " + pattern
}

// DNSInWords says what the pod may resolve (spec.restrictDNS).
func DNSInWords(spec *v1.WorkloadPolicySpec) string {
	if !spec.RestrictDNS {
		return "DNS: the pod may look up any name."
	}
	return "DNS: the pod may look up only names its egress rules name and names under its own search domains; " +
		"in Protect other lookups are refused, in Learn and Monitor they are logged (restrictDNS)."
}

func inNS(ns, what string) string {
	if ns == "" {
		return what
	}
	return what + " in namespace " + ns
}

func selectorInWords(s *v1.SelectorPeer) string {
	pods, nss := "every pod", "this namespace"
	if s.PodSelector != nil {
		pods = "pods labelled " + labelsInWords(s.PodSelector)
	}
	if s.NamespaceSelector != nil {
		nss = "namespaces labelled " + labelsInWords(s.NamespaceSelector)
	}
	return pods + " of " + nss
}

func labelsInWords(s *v1.LabelSelector) string {
	sel, err := s.AsSelector()
	if err != nil || sel.Empty() {
		return "anything"
	}
	return sel.String()
}

// portsInWords says "on TCP 80, UDP 53" or "on every port".
func portsInWords(ports []v1.Port) string {
	if len(ports) == 0 {
		return "on every port"
	}
	var out []string
	for _, p := range ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		switch {
		case p.Port == 0:
			out = append(out, "every "+proto+" port")
		case p.EndPort > p.Port:
			out = append(out, fmt.Sprintf("%s %d-%d", proto, p.Port, p.EndPort))
		default:
			out = append(out, fmt.Sprintf("%s %d", proto, p.Port))
		}
	}
	return "on " + strings.Join(out, ", ")
}
