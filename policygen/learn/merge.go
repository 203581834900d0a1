package learn

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/manifest"
)

// MaxPortsPerRule bounds a learned rule's port list: a peer seen on more distinct ports of a protocol
// than this gets the whole protocol, since a list that long is a range in all but name.
const MaxPortsPerRule = 32

// MaxRules is the CRD's bound on a rule list: a new learned rule that would pass it is not added
// (the API server would refuse the whole update), and the flow stays unlearned.
const MaxRules = 256

// Observation is one reported flow with its peer already identified.
type Observation struct {
	Direction policy.Direction
	// Addr is the remote address; Peer is who it is (a workload, Service, the nodes, the DNS name the
	// pod resolved an external Addr from, or Addr's CIDR).
	Addr     netip.Addr
	Peer     v1.Peer
	Protocol policy.Protocol
	Port     int32
}

// Collapse says when Merge names a whole namespace instead of its workloads.
type Collapse struct {
	// At is how many workloads of one other namespace a direction's learned rules must name on one
	// protocol and port before they give way to the namespace; 0 never collapses.
	At int
	// Namespace is the policy's own namespace, whose workloads always stay named: inside its own
	// namespace a workload's least privilege matters most.
	Namespace string
}

// Merge adds the observations to spec as learned rules, one rule per direction and peer with the
// ports merged (the addresses of one name make one rule), skipping what an existing rule already
// allows. It returns how many observations added or widened a rule. Only Learn mode learns: Protect
// never does, and in Monitor what Protect would deny is exactly what the operator wants to see as
// audits, not have allowed behind their back.
//
// Many callers of one namespace collapse into that namespace (c): once the learned rules of a
// direction name c.At workloads of one other namespace on a protocol and port, the port moves from
// their rules into the learned rule l-namespace-<namespace>, whose peer selects every pod of that
// namespace (NamespacePeer), and a later workload of that namespace on that port is already
// allowed. A rule left without ports is removed. Only learned rules naming one workload collapse:
// manifest and user rules, Services and the policy's own namespace stay as they are.
//
// A Service's manifest ingress rule, open to every address, does not count as allowing a caller: the
// caller is learned, so that the port can be narrowed to its callers when the policy leaves Learn
// (package manifest), unless open (the policy's status.openPorts) says the port is public.
//
// Loopback is allowed unless denied, and the sidecar reports only the connections to ports a deny
// rule names: a connection to a port that only a manifest deny names (a mesh proxy's admin port) is
// learned into the allow rule LoopbackRuleName, which the generator then leaves out of the deny. A
// person's deny is never learned around.
func Merge(spec *v1.WorkloadPolicySpec, open []v1.OpenPort, obs []Observation, c Collapse) int {
	if spec.Mode != policy.Learn && spec.Mode != "" {
		return 0
	}
	learned := 0
	for _, o := range obs {
		var ok bool
		switch o.Direction {
		case policy.Ingress:
			ok = !covered(spec.Ingress, o, open) && add(&spec.Ingress, o)
			c.collapse(&spec.Ingress, o)
		case policy.Egress:
			ok = !covered(spec.Egress, o, nil) && add(&spec.Egress, o)
			c.collapse(&spec.Egress, o)
		case policy.Loopback:
			ok = addLoopback(&spec.Loopback, o)
		}
		if ok {
			learned++
		}
	}
	return learned
}

// covered reports whether a rule already allows o: one naming the same peer, its workload's namespace
// (NamespacePeer), a name pattern matching its name, or a CIDR holding its address, with a port range
// holding its port. A Service's open ingress rule does not count unless open says its port is public.
func covered(rules []v1.Rule, o Observation, open []v1.OpenPort) bool {
	for _, r := range rules {
		if !portAllowed(r.Ports, o.Protocol, o.Port) || narrowable(r, o, open) {
			continue
		}
		for _, p := range r.Peers {
			if equality.Semantic.DeepEqual(p, o.Peer) {
				return true
			}
			if ns := namespaceOf(p); ns != "" && o.Peer.Workload != nil && o.Peer.Workload.Namespace == ns {
				return true
			}
			if p.FQDN != "" && o.Peer.FQDN != "" && policy.MatchName(p.FQDN, o.Peer.FQDN) {
				return true
			}
			if pfx, err := netip.ParsePrefix(p.CIDR); err == nil && pfx.Contains(o.Addr) {
				return true
			}
		}
	}
	return false
}

// narrowable reports whether r is a manifest ingress rule open to every address on o's port that open
// does not list as public: one the learner looks through to record the port's callers.
func narrowable(r v1.Rule, o Observation, open []v1.OpenPort) bool {
	if o.Direction != policy.Ingress || r.Origin != policy.OriginManifest ||
		!slices.ContainsFunc(r.Peers, func(p v1.Peer) bool { pfx, err := netip.ParsePrefix(p.CIDR); return err == nil && pfx.Bits() == 0 }) {
		return false
	}
	return !slices.ContainsFunc(open, func(p v1.OpenPort) bool {
		return p.Rule == r.Name && p.Reason == v1.OpenPublic && p.Protocol == o.Protocol && p.Port == o.Port
	})
}

func portAllowed(ports []v1.Port, proto policy.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if cmp.Or(p.Protocol, "TCP") != proto {
			continue
		}
		if p.Port == 0 || p.Port == port || (p.EndPort != 0 && p.Port <= port && port <= p.EndPort) {
			return true
		}
	}
	return false
}

// add puts o's port into the learned rule for its peer, creating the rule if needed.
func add(rules *[]v1.Rule, o Observation) bool {
	name := RuleName(o.Peer)
	i := slices.IndexFunc(*rules, func(r v1.Rule) bool { return r.Name == name })
	if i < 0 && len(*rules) >= MaxRules {
		return false
	}
	if i < 0 {
		*rules = append(*rules, v1.Rule{Name: name, Origin: policy.OriginLearned, Peers: []v1.Peer{o.Peer},
			Ports: []v1.Port{{Protocol: o.Protocol, Port: o.Port}}})
		return true
	}
	r := &(*rules)[i]
	if r.Origin != policy.OriginLearned {
		return false // someone else's rule holds the name: never touch it
	}
	r.Ports = widen(manifest.NormalizePorts(append(r.Ports, v1.Port{Protocol: o.Protocol, Port: o.Port})))
	return true
}

// collapse moves o's port from the learned rules naming workloads of o's namespace into the rule
// naming the namespace, once c.At of them allow it (see Merge). The namespace rule takes the port
// before any caller loses it; a caller's range is split around the port, and its whole protocol,
// wider than the port, stays.
func (c Collapse) collapse(rules *[]v1.Rule, o Observation) {
	if c.At <= 0 || o.Peer.Workload == nil {
		return
	}
	ns := o.Peer.Workload.Namespace
	if ns == "" || ns == c.Namespace { // identify names the policy's own namespace's workloads without one
		return
	}
	callers := map[string]bool{} // rule names
	workloads := map[v1.WorkloadRef]bool{}
	for _, r := range *rules {
		if !portAllowed(r.Ports, o.Protocol, o.Port) {
			continue
		}
		if slices.ContainsFunc(r.Peers, func(p v1.Peer) bool { return namespaceOf(p) == ns }) {
			return // collapsed already: o's workload was covered
		}
		if r.Origin == policy.OriginLearned && len(r.Ports) > 0 && len(r.Peers) == 1 && r.Peers[0].Workload != nil && r.Peers[0].Workload.Namespace == ns {
			callers[r.Name] = true
			workloads[r.Peers[0].Workload.WorkloadRef] = true
		}
	}
	if len(workloads) < c.At || !add(rules, Observation{Direction: o.Direction, Peer: NamespacePeer(ns), Protocol: o.Protocol, Port: o.Port}) {
		return
	}
	for i := range *rules {
		if r := &(*rules)[i]; callers[r.Name] {
			r.Ports = without(r.Ports, o.Protocol, o.Port)
		}
	}
	// No ports would mean every port.
	*rules = slices.DeleteFunc(*rules, func(r v1.Rule) bool { return callers[r.Name] && len(r.Ports) == 0 })
}

// without is ports less port of proto: its own entry goes, a range holding it is split around it, and
// the whole protocol stays.
func without(ports []v1.Port, proto policy.Protocol, port int32) []v1.Port {
	var out []v1.Port
	for _, p := range ports {
		if cmp.Or(p.Protocol, "TCP") != proto || (p.Port == 0 && port != 0) || port < p.Port || port > max(p.Port, p.EndPort) {
			out = append(out, p)
			continue
		}
		if port > p.Port {
			out = append(out, portRange(p.Protocol, p.Port, port-1))
		}
		if port < p.EndPort {
			out = append(out, portRange(p.Protocol, port+1, p.EndPort))
		}
	}
	return out
}

// portRange is the ports from to through, one port without an end.
func portRange(proto policy.Protocol, from, through int32) v1.Port {
	if from == through {
		return v1.Port{Protocol: proto, Port: from}
	}
	return v1.Port{Protocol: proto, Port: from, EndPort: through}
}

// NamespacePeer is the peer that selects every pod of namespace ns: the API server labels every
// namespace kubernetes.io/metadata.name with its own name and keeps it so, and no pod selector means
// every pod, both where policygen resolves the peer and in an exported NetworkPolicy.
func NamespacePeer(ns string) v1.Peer {
	return v1.Peer{Selector: &v1.SelectorPeer{NamespaceSelector: &v1.LabelSelector{
		MatchLabels: map[string]v1.LabelValue{corev1.LabelMetadataName: v1.LabelValue(ns)}}}}
}

// namespaceOf is the namespace p selects every pod of, in NamespacePeer's form (an empty pod selector
// also selects every pod), or "".
func namespaceOf(p v1.Peer) string {
	s := p.Selector
	if s == nil || (s.PodSelector != nil && (len(s.PodSelector.MatchLabels) > 0 || len(s.PodSelector.MatchExpressions) > 0)) {
		return ""
	}
	ns, _ := s.NamespaceSelector.NamespaceName()
	return ns
}

// LoopbackRuleName is the learned loopback allow rule's name.
const LoopbackRuleName = "l-loopback"

// maxLoopbackRules is the CRD's bound on the loopback rule list.
const maxLoopbackRules = 64

// addLoopback puts o's port into the learned loopback allow rule when a manifest deny rule names the
// port and no rule of another origin does (a person's deny stands; a person's allow already allows).
func addLoopback(rules *[]v1.LoopbackRule, o Observation) bool {
	manifestDeny := false
	for _, r := range *rules {
		if !portAllowed(r.Ports, o.Protocol, o.Port) {
			continue
		}
		if r.Origin != policy.OriginManifest {
			return false
		}
		manifestDeny = manifestDeny || r.Action == policy.ActionDeny
	}
	if !manifestDeny {
		return false
	}
	port := v1.Port{Protocol: o.Protocol, Port: o.Port}
	i := slices.IndexFunc(*rules, func(r v1.LoopbackRule) bool { return r.Name == LoopbackRuleName })
	switch {
	case i < 0 && len(*rules) >= maxLoopbackRules:
		return false
	case i < 0:
		*rules = append(*rules, v1.LoopbackRule{Name: LoopbackRuleName, Origin: policy.OriginLearned, Action: policy.ActionAllow, Ports: []v1.Port{port}})
		return true
	}
	r := &(*rules)[i]
	if r.Origin != policy.OriginLearned || r.Action != policy.ActionAllow {
		return false // someone else's rule holds the name: never touch it
	}
	r.Ports = manifest.NormalizePorts(append(r.Ports, port))
	return true
}

// widen turns runs of consecutive ports into ranges and a protocol with too many entries into the
// whole protocol.
func widen(ports []v1.Port) []v1.Port {
	var out []v1.Port
	for _, p := range ports {
		if n := len(out); n > 0 && out[n-1].Protocol == p.Protocol && out[n-1].Port != 0 && p.Port != 0 {
			last := &out[n-1]
			end := max(last.EndPort, last.Port)
			if p.Port <= end+1 {
				if pe := max(p.EndPort, p.Port); pe > end {
					last.EndPort = pe
				}
				continue
			}
		}
		out = append(out, p)
	}
	perProto := map[policy.Protocol]int{}
	for _, p := range out {
		perProto[p.Protocol]++
	}
	var res []v1.Port
	for _, p := range out {
		switch n := perProto[p.Protocol]; {
		case n > MaxPortsPerRule:
			res = append(res, v1.Port{Protocol: p.Protocol})
			perProto[p.Protocol] = -1 // emitted once
		case n >= 0:
			res = append(res, p)
		}
	}
	return res
}

var notName = regexp.MustCompile(`[^a-z0-9.-]+`)

// RuleName is the learned rule's name for a peer: readable, stable, and valid as a rule name.
func RuleName(p v1.Peer) string {
	var n string
	switch {
	case p.Workload != nil:
		n = "l-" + strings.ToLower(p.Workload.Kind) + "-" + p.Workload.Name
		if p.Workload.Namespace != "" {
			n += "." + p.Workload.Namespace
		}
	case p.Service != nil:
		n = "l-svc-" + p.Service.Name
		if p.Service.Namespace != "" {
			n += "." + p.Service.Namespace
		}
	case p.Nodes:
		n = "l-nodes"
	case namespaceOf(p) != "":
		n = "l-namespace-" + namespaceOf(p)
	case p.FQDN != "":
		n = "l-fqdn-" + p.FQDN
	default:
		n = "l-cidr-" + strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(p.CIDR)
	}
	n = strings.Trim(notName.ReplaceAllString(strings.ToLower(n), "-"), "-.")
	if len(n) > 100 {
		sum := sha256.Sum256([]byte(n))
		n = strings.Trim(n[:87], "-.") + "-" + hex.EncodeToString(sum[:])[:12]
	}
	return n
}

// sortObservations orders observations so that rules and ports are learned in a stable order.
func sortObservations(obs []Observation) {
	slices.SortFunc(obs, func(a, b Observation) int {
		return cmp.Or(cmp.Compare(a.Direction, b.Direction), a.Addr.Compare(b.Addr), cmp.Compare(a.Peer.FQDN, b.Peer.FQDN),
			cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
}
