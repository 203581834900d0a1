package ui

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/policygen/policyapi"
)

// Graph is the connection graph: workloads and the peers their rules and verdicts name, and the
// allowed (by a rule) and denied (reported deny or audit) connections between them.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is a workload ("namespace/Kind/name") or another peer (a Service, CIDR, selector, the nodes,
// a DNS name or name pattern).
type Node struct {
	ID string `json:"id"`
	// Workload is true for a workload with a policy; Mode is then its mode.
	Workload bool        `json:"workload"`
	Mode     policy.Mode `json:"mode,omitempty"`
}

// Edge is a connection from the connecting end to the accepting end.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Kind is "allowed" or "denied".
	Kind string `json:"kind"`
	// Label is the ports, or the verdict's port.
	Label string `json:"label"`
}

// BuildGraph draws policies' rules and the verdicts as a graph.
func BuildGraph(policies []v1.WorkloadPolicy, verdicts []Event) Graph {
	g := graphBuilder{nodes: map[string]Node{}, edges: map[Edge]bool{}}
	for i := range policies {
		p := &policies[i]
		self := p.Namespace + "/" + p.Spec.Workload.Kind + "/" + p.Spec.Workload.Name
		g.nodes[self] = Node{ID: self, Workload: true, Mode: modeOf(p)}
		for _, r := range p.Spec.Ingress {
			for _, peer := range r.Peers {
				g.edge(Edge{From: peerID(p.Namespace, peer), To: self, Kind: "allowed", Label: portsLabel(r.Ports)})
			}
		}
		for _, r := range p.Spec.Egress {
			for _, peer := range r.Peers {
				g.edge(Edge{From: self, To: peerID(p.Namespace, peer), Kind: "allowed", Label: portsLabel(r.Ports)})
			}
		}
	}
	for _, v := range verdicts {
		self := v.Namespace + "/" + v.Workload
		label := v.Protocol + " " + strconv.Itoa(int(v.Port))
		switch v.Direction {
		case "egress":
			g.edge(Edge{From: self, To: verdictPeer(v), Kind: "denied", Label: label})
		case "ingress":
			g.edge(Edge{From: v.Peer, To: self, Kind: "denied", Label: label})
		}
	}
	out := Graph{Nodes: []Node{}, Edges: []Edge{}}
	for _, n := range g.nodes {
		out.Nodes = append(out.Nodes, n)
	}
	for e := range g.edges {
		out.Edges = append(out.Edges, e)
	}
	slices.SortFunc(out.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(out.Edges, func(a, b Edge) int {
		return strings.Compare(a.From+" "+a.To+" "+a.Kind+" "+a.Label, b.From+" "+b.To+" "+b.Kind+" "+b.Label)
	})
	return out
}

type graphBuilder struct {
	nodes map[string]Node
	edges map[Edge]bool
}

// edge adds e and any end not yet a node (a peer without a policy of its own).
func (g *graphBuilder) edge(e Edge) {
	for _, id := range []string{e.From, e.To} {
		if _, ok := g.nodes[id]; !ok {
			g.nodes[id] = Node{ID: id}
		}
	}
	g.edges[e] = true
}

// peerID names a peer as a node; workloads, Services and the nodes as a verdict's peer names them
// (resolve.Owner), and DNS names as a verdict's name does (verdictPeer), so that a peer workload and
// its own policy's node are one, and a denied connection from a peer some rule names lands on that
// rule's node.
func peerID(ns string, p v1.Peer) string {
	switch {
	case p.Workload != nil:
		return cmp.Or(p.Workload.Namespace, ns) + "/" + p.Workload.Kind + "/" + p.Workload.Name
	case p.Service != nil:
		return cmp.Or(p.Service.Namespace, ns) + "/Service/" + p.Service.Name
	case p.Nodes:
		return "nodes"
	case p.CIDR != "":
		return p.CIDR
	case p.FQDN != "":
		return p.FQDN
	}
	return PeerName(p)
}

// verdictPeer is the node of a verdict's peer: the DNS name the pod resolved an address outside the
// cluster from, else the peer as reported (a DNS query's peer is its resolver).
func verdictPeer(v Event) string {
	if v.Name != "" && v.Peer == v.PeerAddr && v.Evaluator != policyapi.QueryEvaluator {
		return v.Name
	}
	return v.Peer
}

func portsLabel(ports []v1.Port) string { return strings.TrimPrefix(portsInWords(ports), "on ") }

// graph serves the graph of every policy and the verdicts the ring holds.
func (s *Server) graph(w http.ResponseWriter, r *http.Request) {
	var list v1.WorkloadPolicyList
	if err := s.reader.List(r.Context(), &list); err != nil {
		s.log.Error(err, "list policies")
		writeError(w, http.StatusServiceUnavailable, "cannot list policies now, retry")
		return
	}
	vs, _, _ := s.feed.After(0)
	writeJSON(w, BuildGraph(list.Items, vs))
}
