// Package policy defines the resolved policy that policygen serves to a sidecar and that the sidecar
// enforces: peers already resolved to addresses, every rule carrying a stable id for the verdict log.
// It is the one contract between policygen and the sidecar, so it has no dependency on either.
package policy

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Policy is one workload's resolved policy.
type Policy struct {
	// Namespace and Workload name the workload the policy belongs to ("Deployment/web").
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	// Revision increases with every change policygen makes; the sidecar logs it with each verdict.
	Revision int64 `json:"revision"`
	Mode     Mode  `json:"mode"`
	// Canary says this pod is one of the workload's canaries (WorkloadPolicy spec.canary): policygen
	// serves it Protect while the workload's policy is in Monitor, and its verdict lines say so.
	Canary bool `json:"canary,omitempty"`
	// Ingress rules match the remote source of inbound connections, Egress the remote destination of
	// outbound ones.
	Ingress []Rule `json:"ingress,omitempty"`
	Egress  []Rule `json:"egress,omitempty"`
	// Loopback rules say which in-pod ports the pod's own processes may reach over loopback. Loopback
	// traffic no rule names is allowed, so that an app keeps talking to itself; a deny rule forbids a
	// port (a proxy's admin port, say).
	Loopback []LoopbackRule `json:"loopback,omitempty"`
	// Names maps peer addresses to a readable name (workload or Service) for the verdict log, so that
	// even a denied peer is named. Optional.
	Names map[netip.Addr]string `json:"names,omitempty"`
	// RestrictDNS, in Protect, refuses the pod's DNS queries for names that no egress rule's Names
	// pattern matches and that lie outside the pod's own search domains (its resolv.conf: the
	// cluster's names), and logs each refused query as a verdict: a name nothing may reach is never
	// resolved, and DNS cannot carry data out of the pod in made-up names. In Learn and Monitor the
	// queries are only audited.
	RestrictDNS bool `json:"restrictDNS,omitempty"`
}

// Rule allows connections with a set of peers on a set of ports.
type Rule struct {
	// ID is stable across revisions and unique within the policy; verdict lines name it.
	ID     string `json:"id"`
	Origin Origin `json:"origin"`
	// Peer names the peer as people know it: "workload:ns/Deployment/api", "service:ns/api",
	// "cidr:10.0.0.0/8", "fqdn:api.stripe.com" (NamePeer).
	Peer string `json:"peer"`
	// CIDRs are the peer's resolved addresses; a single address is a /32 or /128.
	CIDRs []netip.Prefix `json:"cidrs"`
	// Names are DNS name patterns (exact, or a one-label wildcard "*.example.com": see
	// ValidateNamePattern), for egress rules only. The sidecar allows an address for the rule's ports
	// while a DNS answer the pod asked for and received from its resolvers maps a name the patterns
	// match to it, for the answer's TTL (within the sidecar's floor and cap). A rule may have CIDRs,
	// Names or both.
	Names []string `json:"names,omitempty"`
	// Ports the rule allows; empty means every port of every protocol.
	Ports []PortRange `json:"ports,omitempty"`
}

// PortRange is one protocol's port or range of ports. EndPort 0 means Port alone; Port 0 means every
// port of the protocol.
//
// ICMP and ICMPv6 have no ports (Port and EndPort stay 0); Types lists the message types the rule
// allows (8 echo request, 128 ICMPv6 echo request, ...), and none means every type. What a rule judges
// is the first packet of a new ICMP flow: a request. Errors about a connection the pod has (port
// unreachable, packet too big) belong to that connection and are never judged on their own.
type PortRange struct {
	Protocol Protocol `json:"protocol"`
	Port     uint16   `json:"port,omitempty"`
	EndPort  uint16   `json:"endPort,omitempty"`
	// Types are ICMP or ICMPv6 message types, 0-255; only for those protocols.
	Types []uint16 `json:"types,omitempty"`
}

// Bounds returns the first and last port of the range.
func (r PortRange) Bounds() (uint16, uint16) {
	switch {
	case r.Port == 0:
		return 0, 65535
	case r.EndPort == 0:
		return r.Port, r.Port
	}
	return r.Port, r.EndPort
}

// LoopbackRule allows or forbids in-pod ports to the pod's processes.
type LoopbackRule struct {
	ID     string      `json:"id"`
	Origin Origin      `json:"origin"`
	Action Action      `json:"action"`
	Ports  []PortRange `json:"ports"`
}

// EachRule hands fn each ingress rule, then each egress rule, in policy order, as Stream hands a
// document's rules over; it stops at fn's first error and returns it.
func (p *Policy) EachRule(fn func(Direction, Rule) error) error {
	for _, r := range p.Ingress {
		if err := fn(Ingress, r); err != nil {
			return err
		}
	}
	for _, r := range p.Egress {
		if err := fn(Egress, r); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports the first thing that makes the policy unsafe or meaningless to apply.
func (p *Policy) Validate() error {
	if err := p.validateMode(); err != nil {
		return err
	}
	var ids ruleIDs
	for _, set := range []struct {
		dir   Direction
		rules []Rule
	}{{Ingress, p.Ingress}, {Egress, p.Egress}} {
		for i, r := range set.rules {
			if err := r.validateIn(set.dir); err != nil {
				return fmt.Errorf("%s[%d]: %w", set.dir, i, err)
			}
			ids.add(r.ID, set.dir, i)
		}
	}
	return p.validateRest(&ids)
}

func (p *Policy) validateMode() error {
	switch p.Mode {
	case Learn, Monitor, Protect:
	default:
		return fmt.Errorf("mode %q: want Learn, Monitor or Protect", p.Mode)
	}
	if p.Revision < 0 {
		return fmt.Errorf("revision %d is negative", p.Revision)
	}
	return nil
}

// validateRest validates what the rules leave: the loopback rules and the names; and then that no
// id is repeated, the rules' being in ids already.
func (p *Policy) validateRest(ids *ruleIDs) error {
	for i, r := range p.Loopback {
		if err := checkID(r.ID); err != nil {
			return fmt.Errorf("loopback[%d]: %w", i, err)
		}
		ids.add(r.ID, Loopback, i)
		if err := checkLoopbackPorts(r.Ports); err != nil {
			return fmt.Errorf("loopback[%d]: %w", i, err)
		}
		if r.Action != ActionAllow && r.Action != ActionDeny {
			return fmt.Errorf("loopback[%d]: action %q: want allow or deny", i, r.Action)
		}
		if len(r.Ports) == 0 {
			return fmt.Errorf("loopback[%d]: no ports", i)
		}
		if err := checkPorts(r.Ports); err != nil {
			return fmt.Errorf("loopback[%d]: %w", i, err)
		}
	}
	for a := range p.Names {
		if !a.IsValid() {
			return fmt.Errorf("names: invalid address")
		}
	}
	return ids.repeated()
}

// validateIn validates a rule of direction dir (Ingress or Egress) but for its id's uniqueness,
// which ruleIDs checks.
func (r *Rule) validateIn(dir Direction) error {
	if err := r.validate(); err != nil {
		return err
	}
	if dir == Ingress && len(r.Names) > 0 {
		return fmt.Errorf("rule %s: names are for egress rules only (a DNS answer tells where the pod connects, not who connects to it)", r.ID)
	}
	return nil
}

func (r *Rule) validate() error {
	if err := checkID(r.ID); err != nil {
		return err
	}
	switch r.Origin {
	case OriginManifest, OriginLearned, OriginUser:
	default:
		return fmt.Errorf("rule %s: origin %q: want manifest, learned or user", r.ID, r.Origin)
	}
	for _, c := range r.CIDRs {
		if !c.IsValid() {
			return fmt.Errorf("rule %s: invalid CIDR", r.ID)
		}
		if c.Masked() != c {
			return fmt.Errorf("rule %s: CIDR %s has host bits set", r.ID, c)
		}
	}
	if len(r.Names) > MaxRuleNames {
		return fmt.Errorf("rule %s: %d names, over the %d limit", r.ID, len(r.Names), MaxRuleNames)
	}
	for _, n := range r.Names {
		if err := ValidateNamePattern(n); err != nil {
			return fmt.Errorf("rule %s: %w", r.ID, err)
		}
	}
	if err := checkPorts(r.Ports); err != nil {
		return fmt.Errorf("rule %s: %w", r.ID, err)
	}
	return nil
}

// MaxRuleNames bounds Rule.Names.
const MaxRuleNames = 64

func checkID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, " \t\n\"") {
		return fmt.Errorf("rule id %q: want 1-128 characters without spaces or quotes", id)
	}
	if id == "default" || id == "loopback-default" {
		return fmt.Errorf("rule id %q is reserved: verdict lines use it for the mode's default", id)
	}
	return nil
}

// ruleIDs are the ids of a policy's rules, to find a repeated one once all are in (repeated): end to
// end in one buffer rather than in a map, since a policy may have 100k of them.
type ruleIDs struct {
	text  []byte
	ends  []uint32
	where []uint32 // the rule's direction << 30 | its index
}

func (s *ruleIDs) add(id string, dir Direction, i int) {
	s.text = append(s.text, id...)
	s.ends = append(s.ends, uint32(len(s.text)))
	s.where = append(s.where, uint32(dir)<<30|uint32(i))
}

func (s *ruleIDs) id(k int32) []byte {
	start := uint32(0)
	if k > 0 {
		start = s.ends[k-1]
	}
	return s.text[start:s.ends[k]]
}

// repeated reports the id repeated the soonest, at its second rule, as a check in policy order would.
func (s *ruleIDs) repeated() error {
	order := make([]int32, len(s.ends))
	for k := range order {
		order[k] = int32(k)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Or(bytes.Compare(s.id(a), s.id(b)), cmp.Compare(a, b)) })
	second := int32(-1)
	for k := 1; k < len(order); k++ {
		if bytes.Equal(s.id(order[k]), s.id(order[k-1])) && (second < 0 || order[k] < second) {
			second = order[k]
		}
	}
	if second < 0 {
		return nil
	}
	w := s.where[second]
	return fmt.Errorf("%s[%d]: rule id %q is not unique", Direction(w>>30), w&(1<<30-1), s.id(second))
}

// checkLoopbackPorts refuses ICMP in loopback rules: the pod pinging itself names no port, and the
// loopback chain judges ports only.
func checkLoopbackPorts(ports []PortRange) error {
	for _, pr := range ports {
		if pr.Protocol.IsICMP() {
			return fmt.Errorf("protocol %s: loopback rules name ports (TCP, UDP or SCTP)", pr.Protocol)
		}
	}
	return nil
}

func checkPorts(ports []PortRange) error {
	for _, pr := range ports {
		if pr.Protocol.Number() == 0 {
			return fmt.Errorf("protocol %q: want TCP, UDP, SCTP, ICMP or ICMPv6", pr.Protocol)
		}
		if pr.Protocol.IsICMP() {
			if pr.Port != 0 || pr.EndPort != 0 {
				return fmt.Errorf("protocol %s has no ports: name its types", pr.Protocol)
			}
			for _, t := range pr.Types {
				if t > 255 {
					return fmt.Errorf("protocol %s: type %d above 255", pr.Protocol, t)
				}
			}
			continue
		}
		if len(pr.Types) != 0 {
			return fmt.Errorf("protocol %s: types are for ICMP and ICMPv6 only", pr.Protocol)
		}
		if pr.EndPort != 0 && (pr.Port == 0 || pr.EndPort < pr.Port) {
			return fmt.Errorf("port range %d-%d is empty or open-ended", pr.Port, pr.EndPort)
		}
	}
	return nil
}
