package ui

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/workload"
)

// Graph is the service map: workloads grouped by namespace, the peers their rules and reported
// connections name (outside addresses grouped by DNS name or CIDR), and one edge per pair and verdict.
type Graph struct {
	// Window is the span the edges' counts and reported connections cover ("5m", "1h", "24h").
	Window string `json:"window"`
	Nodes  []Node `json:"nodes"`
	Edges  []Edge `json:"edges"`
	// Replicas are the policygen replicas whose reported flows and pod states the map holds, and
	// those that did not answer.
	Replicas
}

// Node kinds: a group (a namespace, or everything outside the cluster), a workload with a policy, a
// peer inside the cluster (another workload, a Service, a selector, the nodes) or outside it (a DNS
// name, a CIDR, an address).
const (
	KindGroup    = "group"
	KindWorkload = "workload"
	KindPeer     = "peer"
	KindOutside  = "outside"
)

// OutsideGroup is the group node of the peers outside the cluster.
const OutsideGroup = "group:outside"

// Node is a workload ("namespace/Kind/name"), another peer, or a group holding them (Parent).
type Node struct {
	ID     string `json:"id"`
	Label  string `json:"label"`
	Kind   string `json:"kind"`
	Parent string `json:"parent,omitempty"`
	// For a workload with a policy: the policy's namespace and name (its page), its mode, rules by
	// origin, sidecars in sync, the states its pods reported, and the evidence for
	// promotion (coverage, would-deny flows).
	Namespace string                `json:"namespace,omitempty"`
	Policy    string                `json:"policy,omitempty"`
	Mode      policy.Mode           `json:"mode,omitempty"`
	Rules     map[policy.Origin]int `json:"rules,omitempty"`
	Sidecars  int32                 `json:"sidecars,omitempty"`
	InSync    int32                 `json:"inSync,omitempty"`
	Pods      []PodState            `json:"pods,omitempty"`
	Coverage  *v1.Coverage          `json:"coverage,omitempty"`
	WouldDeny int32                 `json:"wouldDenyFlows,omitempty"`
}

// Edge verdicts: allowed by a manifest or user rule, allowed by a learned rule (or in Learn mode),
// audited (Monitor: Protect would deny), denied.
const (
	EdgeAllowed = "allowed"
	EdgeLearned = "learned"
	EdgeAudited = "audited"
	EdgeDenied  = "denied"
)

// Edge is every connection of one verdict from the connecting end to the accepting end.
type Edge struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	To      string `json:"to"`
	Verdict string `json:"verdict"`
	// Ports are "TCP 8080", or the rule's ports in words.
	Ports []string `json:"ports"`
	// Count is the connections reported in the window; 0 for a rule no reported connection used.
	Count uint64 `json:"count"`
	// Rules are what decided: rule ids as the sidecars report them, "default" for the mode's default.
	Rules []string `json:"rules"`
	// Namespace and Policy name the WorkloadPolicy whose rules decide (the workload's end).
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	// Recent are the latest verdict lines, newest first.
	Recent []Event `json:"recent"`
}

// Windows are the spans the map offers.
var Windows = map[string]time.Duration{"5m": 5 * time.Minute, "1h": time.Hour, "24h": 24 * time.Hour}

// BuildGraph draws policies' rules, the flows reported in the window and the pods' states as a map.
func BuildGraph(window string, policies []v1.WorkloadPolicy, flows []FlowCount, pods func(workload.Key) []PodState) Graph {
	g := graphBuilder{nodes: map[string]Node{}, edges: map[[3]string]*Edge{}, policies: map[string]*v1.WorkloadPolicy{},
		learned: map[[2]string]bool{}}
	for i := range policies {
		p := &policies[i]
		k := workload.Key{Namespace: p.Namespace, Kind: p.Spec.Workload.Kind, Name: p.Spec.Workload.Name}
		self := k.String()
		g.policies[self] = p
		g.nodes[self] = Node{ID: self, Label: shortName(k.Kind, k.Name), Kind: KindWorkload, Parent: g.group(k.Namespace),
			Namespace: p.Namespace, Policy: p.Name, Mode: modeOf(p), Rules: CountByOrigin(&p.Spec),
			Sidecars: p.Status.Sidecars, InSync: p.Status.SidecarsInSync, Pods: pods(k), Coverage: p.Status.Coverage, WouldDeny: p.Status.WouldDenyFlows}
	}
	for self, p := range g.policies {
		for dir, rules := range map[string][]v1.Rule{"ingress": p.Spec.Ingress, "egress": p.Spec.Egress} {
			for _, r := range rules {
				verdict := EdgeAllowed
				if r.Origin == policy.OriginLearned {
					verdict = EdgeLearned
					g.learned[[2]string{self, dir + "/" + r.Name}] = true
				}
				for _, peer := range r.Peers {
					other := g.rulePeer(p.Namespace, peer)
					from, to := other, self
					if dir == "egress" {
						from, to = self, other
					}
					g.edge(from, to, verdict, self).add(portsLabel(r.Ports), dir+"/"+r.Name, 0)
				}
			}
		}
	}
	for _, f := range flows {
		g.flow(f)
	}
	return g.graph(window)
}

type graphBuilder struct {
	nodes    map[string]Node
	edges    map[[3]string]*Edge // from, to, verdict
	policies map[string]*v1.WorkloadPolicy
	learned  map[[2]string]bool // workload, rule id as reported: the rules of learned origin
}

// group returns the group node of namespace ns, adding it.
func (g *graphBuilder) group(ns string) string {
	id := "group:" + ns
	g.nodes[id] = Node{ID: id, Label: ns, Kind: KindGroup}
	return id
}

// peer adds a node for a peer without a policy of its own and returns its id. A cluster object
// "namespace/Kind/name" goes into its namespace's group.
func (g *graphBuilder) peer(id string, outside bool) string {
	if _, ok := g.nodes[id]; ok {
		return id
	}
	switch ns, rest, ok := strings.Cut(id, "/"); {
	case outside:
		g.nodes[OutsideGroup] = Node{ID: OutsideGroup, Label: "outside the cluster", Kind: KindGroup}
		g.nodes[id] = Node{ID: id, Label: id, Kind: KindOutside, Parent: OutsideGroup}
	case ok && strings.Count(rest, "/") == 1:
		kind, name, _ := strings.Cut(rest, "/")
		g.nodes[id] = Node{ID: id, Label: shortName(kind, name), Kind: KindPeer, Parent: g.group(ns)}
	default:
		g.nodes[id] = Node{ID: id, Label: id, Kind: KindPeer}
	}
	return id
}

// rulePeer names a rule's peer as a node; workloads, Services and the nodes as a verdict's peer names
// them (resolve.Owner), DNS names as verdictPeer does, so that a peer workload and its own policy's
// node are one, and a reported connection to a peer some rule names lands on that rule's node.
func (g *graphBuilder) rulePeer(ns string, p v1.Peer) string {
	switch {
	case p.Workload != nil:
		return g.peer(workload.Key{Namespace: cmp.Or(p.Workload.Namespace, ns), Kind: p.Workload.Kind, Name: p.Workload.Name}.String(), false)
	case p.Service != nil:
		return g.peer(cmp.Or(p.Service.Namespace, ns)+"/Service/"+p.Service.Name, false)
	case p.Nodes:
		return g.peer("nodes", false)
	case p.CIDR != "":
		return g.peer(p.CIDR, true)
	case p.FQDN != "":
		return g.peer(p.FQDN, true)
	}
	return g.peer(PeerName(p), false)
}

// flow adds a reported flow to the edge of its pair and verdict.
func (g *graphBuilder) flow(f FlowCount) {
	if f.Direction != "egress" && f.Direction != "ingress" {
		return // the pod's own loopback: no edge of the map
	}
	self := f.Namespace + "/" + f.Workload
	if _, ok := g.nodes[self]; !ok {
		kind, name, _ := strings.Cut(f.Workload, "/")
		g.nodes[self] = Node{ID: self, Label: shortName(kind, name), Kind: KindWorkload, Parent: g.group(f.Namespace), Namespace: f.Namespace}
	}
	other := g.verdictPeer(f.Event)
	from, to := self, other
	if f.Direction == "ingress" {
		from, to = other, self
	}
	e := g.edge(from, to, g.verdictOf(self, f.Event), self)
	e.add(f.Protocol+" "+strconv.Itoa(int(f.Port)), f.Rule, f.Count)
	e.Recent = append(e.Recent, f.Recent...)
}

// verdictOf classes a reported verdict; an allow is learned when a learned rule or the Learn mode's
// default decided it.
func (g *graphBuilder) verdictOf(self string, v Event) string {
	switch v.Verdict {
	case policy.Deny.String():
		return EdgeDenied
	case policy.Audit.String():
		return EdgeAudited
	}
	if v.Mode == string(policy.Learn) && v.Rule == "default" {
		return EdgeLearned
	}
	if g.learned[[2]string{self, v.Rule}] {
		return EdgeLearned
	}
	return EdgeAllowed
}

// verdictPeer is the node of a verdict's peer: a cluster object as reported; outside the cluster, the
// DNS name the pod resolved the address from, else the workload's rule CIDR holding it, else its /24
// (IPv4) or /64 (IPv6). A DNS query's peer is its resolver, as reported.
func (g *graphBuilder) verdictPeer(v Event) string {
	if v.Peer != v.PeerAddr || v.Evaluator == policyapi.QueryEvaluator {
		return g.peer(v.Peer, false)
	}
	if v.Name != "" {
		return g.peer(v.Name, true)
	}
	addr, err := netip.ParseAddr(v.PeerAddr)
	if err != nil {
		return g.peer(v.PeerAddr, true)
	}
	if p := g.policies[v.Namespace+"/"+v.Workload]; p != nil {
		for _, r := range slices.Concat(p.Spec.Ingress, p.Spec.Egress) {
			for _, peer := range r.Peers {
				if c, err := netip.ParsePrefix(peer.CIDR); err == nil && c.Contains(addr) {
					return g.peer(peer.CIDR, true)
				}
			}
		}
	}
	bits := 24
	if addr.Is6() && !addr.Is4In6() {
		bits = 64
	}
	prefix, _ := addr.Prefix(bits)
	return g.peer(prefix.String(), true)
}

// edge returns the edge of a pair and verdict, adding it; self is the workload whose policy decides.
func (g *graphBuilder) edge(from, to, verdict, self string) *Edge {
	k := [3]string{from, to, verdict}
	if e := g.edges[k]; e != nil {
		return e
	}
	e := &Edge{ID: fmt.Sprintf("%s>%s>%s", from, to, verdict), From: from, To: to, Verdict: verdict}
	if n := g.nodes[self]; n.Policy != "" {
		e.Namespace, e.Policy = n.Namespace, n.Policy
	}
	g.edges[k] = e
	return e
}

func (e *Edge) add(ports, rule string, count uint64) {
	if ports != "" && !slices.Contains(e.Ports, ports) {
		e.Ports = append(e.Ports, ports)
	}
	if rule != "" && !slices.Contains(e.Rules, rule) {
		e.Rules = append(e.Rules, rule)
	}
	e.Count += count
}

// graph returns the nodes and edges in a stable order, each edge's verdict lines newest first.
func (g *graphBuilder) graph(window string) Graph {
	out := Graph{Window: window, Nodes: []Node{}, Edges: []Edge{}}
	for _, n := range g.nodes {
		out.Nodes = append(out.Nodes, n)
	}
	for _, e := range g.edges {
		slices.Sort(e.Ports)
		slices.Sort(e.Rules)
		slices.SortFunc(e.Recent, func(a, b Event) int { return b.Time.Compare(a.Time) })
		e.Recent = e.Recent[:min(len(e.Recent), recentPerFlow)]
		if e.Ports == nil {
			e.Ports = []string{}
		}
		if e.Rules == nil {
			e.Rules = []string{}
		}
		if e.Recent == nil {
			e.Recent = []Event{}
		}
		out.Edges = append(out.Edges, *e)
	}
	slices.SortFunc(out.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(out.Edges, func(a, b Edge) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// shortName is a cluster object's label inside its namespace's group: a Deployment's name alone,
// another kind's "Kind/name".
func shortName(kind, name string) string {
	if kind == "Deployment" {
		return name
	}
	return kind + "/" + name
}

func portsLabel(ports []v1.Port) string { return strings.TrimPrefix(portsInWords(ports), "on ") }

// graph serves the map of every policy and the flows every replica saw in the window ?window= names
// (5m, 1h, 24h; 1h when unset).
func (s *Server) graph(w http.ResponseWriter, r *http.Request) {
	window := cmp.Or(r.URL.Query().Get("window"), "1h")
	if _, ok := Windows[window]; !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("window %q: want 5m, 1h or 24h", window))
		return
	}
	var list v1.WorkloadPolicyList
	if err := s.reader.List(r.Context(), &list); err != nil {
		s.log.Error(err, "list policies")
		writeError(w, http.StatusServiceUnavailable, "cannot list policies now, retry")
		return
	}
	all, replicas := s.everywhere(r, window)
	g := BuildGraph(window, list.Items, all.Flows, func(k workload.Key) []PodState { return all.Pods[k.String()] })
	g.Replicas = replicas
	writeJSON(w, g)
}
