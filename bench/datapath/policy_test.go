//go:build bench

package datapath

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"podwall.io/podwall/api/policy"
)

// fillerPorts are the ports the generated filler rules allow, cycled so that the decider's port index
// holds several keys, as a real workload's egress does.
var fillerPorts = []uint16{80, 443, 5432, 6379, 8080, 9090, 53}

// benchPolicy is a Protect policy of n egress rules, one peer each. The last rule allows the server's
// address on ports; the others are filler peers that no connection of the bench touches: /32s from
// 172.16.0.0/12 and, every tenth rule, a /128 from fd10::/64, so that both families' sets are sized.
// Putting the server's rule last means a linear scan of the rules would pay for all of them.
func benchPolicy(n int, server netip.Addr, ports ...uint16) *policy.Policy {
	p := &policy.Policy{Namespace: "bench", Workload: "Deployment/bench", Revision: 1, Mode: policy.Protect}
	p.Egress = make([]policy.Rule, 0, n)
	for i := range n - 1 {
		var peer netip.Prefix
		if i%10 == 9 {
			a := [16]byte{0xfd, 0x10}
			a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			peer = netip.PrefixFrom(netip.AddrFrom16(a), 128)
		} else {
			peer = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		}
		p.Egress = append(p.Egress, policy.Rule{
			ID: fmt.Sprintf("filler-%d", i), Origin: policy.OriginLearned, Peer: "cidr:" + peer.String(),
			CIDRs: []netip.Prefix{peer},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: fillerPorts[i%len(fillerPorts)]}},
		})
	}
	rule := policy.Rule{ID: "bench-server", Origin: policy.OriginUser, Peer: "workload:bench/Deployment/server",
		CIDRs: []netip.Prefix{netip.PrefixFrom(server, server.BitLen())}}
	for _, port := range ports {
		rule.Ports = append(rule.Ports, policy.PortRange{Protocol: policy.TCP, Port: port})
	}
	p.Egress = append(p.Egress, rule)
	return p
}

// writePolicy validates p and writes it as JSON into dir, returning the file's path.
func writePolicy(t testing.TB, dir, name string, p *policy.Policy) string {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("generated policy %s: %v", name, err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("encode policy %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write policy %s: %v", name, err)
	}
	return path
}
