package decide

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

const testPolicy = `
namespace: shop
workload: Deployment/web
revision: 7
mode: Protect
ingress:
- {id: from-frontend, origin: manifest, peer: "workload:shop/Deployment/frontend",
   cidrs: [10.244.1.0/24, "fd00:1::/64"], ports: [{protocol: TCP, port: 8080}]}
- {id: probes, origin: manifest, peer: "cidr:10.0.0.0/8", cidrs: [10.0.0.0/8],
   ports: [{protocol: TCP, port: 8081, endPort: 8090}]}
- {id: ping-from-frontend, origin: user, peer: "workload:shop/Deployment/frontend",
   cidrs: [10.244.1.0/24, "fd00:1::/64"], ports: [{protocol: ICMP, types: [8]}, {protocol: ICMPv6, types: [128]}]}
egress:
- {id: dns, origin: manifest, peer: "service:kube-system/kube-dns", cidrs: [10.96.0.10/32],
   ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}
- {id: api, origin: learned, peer: "workload:shop/Deployment/api", cidrs: [10.244.2.0/24, "fd00:2::5/128"],
   ports: [{protocol: TCP, port: 8000, endPort: 8010}]}
- {id: api-any, origin: user, peer: "service:shop/api-any", cidrs: [10.244.2.7/32]}
- {id: metrics, origin: user, cidrs: [10.244.3.0/24], ports: [{protocol: TCP}]}
- {id: https, origin: user, peer: "cidr:0.0.0.0/0", cidrs: [0.0.0.0/0], ports: [{protocol: TCP, port: 443}]}
- {id: icmp-out, origin: user, peer: "cidr:1.1.1.0/24", cidrs: [1.1.1.0/24], ports: [{protocol: ICMP}]}
loopback:
- {id: envoy-admin, origin: manifest, action: deny, ports: [{protocol: TCP, port: 15000}]}
- {id: app-ports, origin: user, action: allow, ports: [{protocol: TCP, port: 1000, endPort: 20000}]}
- {id: also-admin, origin: user, action: allow, ports: [{protocol: TCP, port: 15000}]}
names:
  10.244.3.9: "workload:shop/Deployment/metrics"
  192.0.2.1: "service:other/named"
`

// meshPorts are Envoy's and Linkerd's redirect targets.
var meshPorts = Options{MeshPorts: []uint16{15001, 15006, 4140, 4143}}

func mustPolicy(t testing.TB, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ap(s string) netip.AddrPort {
	if s == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(s)
}

const (
	tcp    = 6
	udp    = 17
	icmp   = 1
	icmpv6 = 58
	sctp   = 132
)

// ping is an ICMP or ICMPv6 flow of message type typ, whose ends carry port 0.
func ping(dir policy.Direction, proto uint8, remote, local string, typ uint8) Conn {
	return Conn{Direction: dir, Proto: proto, Local: ap(local), Remote: ap(remote), ICMPType: typ}
}

func in(proto uint8, remote, local string) Conn {
	return Conn{Direction: policy.Ingress, Proto: proto, Local: ap(local), Remote: ap(remote)}
}

func out(proto uint8, remote string) Conn {
	return Conn{Direction: policy.Egress, Proto: proto, Local: ap("10.244.0.5:40000"), Remote: ap(remote)}
}

func lo(proto uint8, dst, original string) Conn {
	return Conn{Direction: policy.Loopback, Proto: proto, Local: ap("127.0.0.1:40000"), Remote: ap(dst), Original: ap(original)}
}

type decideCase struct {
	name string
	conn Conn
	// want is the Protect decision; Mode and Revision are filled in by the test.
	want Decision
}

func allow(rule, evaluator, peer string) Decision {
	return Decision{Verdict: policy.Allow, Rule: rule, Evaluator: evaluator, Peer: peer}
}

func deny(rule, evaluator, peer string) Decision {
	return Decision{Verdict: policy.Deny, Rule: rule, Evaluator: evaluator, Peer: peer}
}

func redirected(d Decision) Decision {
	d.Redirected = true
	return d
}

var decideCases = []decideCase{
	{"ingress from frontend", in(tcp, "10.244.1.3:5000", "10.244.0.5:8080"),
		allow("from-frontend", "ingress", "workload:shop/Deployment/frontend")},
	{"ingress from frontend v6", in(tcp, "[fd00:1::3]:5000", "[fd00::5]:8080"),
		allow("from-frontend", "ingress", "workload:shop/Deployment/frontend")},
	{"ingress probe range", in(tcp, "10.1.2.3:5000", "10.244.0.5:8085"),
		allow("probes", "ingress", "cidr:10.0.0.0/8")},
	{"ingress frontend wrong port", in(tcp, "10.244.1.3:5000", "10.244.0.5:9090"),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"ingress frontend wrong protocol", in(udp, "10.244.1.3:5000", "10.244.0.5:8080"),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"ingress named stranger", in(tcp, "192.0.2.1:5000", "10.244.0.5:8080"),
		deny("default", "default", "service:other/named")},
	{"ingress rules do not judge egress", out(tcp, "10.244.1.3:8080"),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"egress dns udp", out(udp, "10.96.0.10:53"), allow("dns", "egress", "service:kube-system/kube-dns")},
	{"egress dns tcp", out(tcp, "10.96.0.10:53"), allow("dns", "egress", "service:kube-system/kube-dns")},
	{"egress dns sctp", out(sctp, "10.96.0.10:53"), deny("default", "default", "cidr:10.96.0.10/32")},
	{"egress api range", out(tcp, "10.244.2.9:8010"), allow("api", "egress", "workload:shop/Deployment/api")},
	{"egress api past range", out(tcp, "10.244.2.9:8011"), deny("default", "default", "cidr:10.244.2.9/32")},
	{"egress first rule wins", out(tcp, "10.244.2.7:8005"), allow("api", "egress", "workload:shop/Deployment/api")},
	{"egress any protocol", out(tcp, "10.244.2.7:9999"), allow("api-any", "egress", "service:shop/api-any")},
	{"egress any protocol icmp", out(icmp, "10.244.2.7:0"), allow("api-any", "egress", "service:shop/api-any")},
	{"egress api v6", out(tcp, "[fd00:2::5]:8000"), allow("api", "egress", "workload:shop/Deployment/api")},
	{"egress api v6 neighbour", out(tcp, "[fd00:2::6]:8000"), deny("default", "default", "cidr:fd00:2::6/128")},
	{"egress v4-mapped is not v4", out(udp, "[::ffff:10.96.0.10]:53"), deny("default", "default", "cidr:::ffff:10.96.0.10/128")},
	{"egress all tcp ports, peer from names", out(tcp, "10.244.3.9:1"), allow("metrics", "egress", "workload:shop/Deployment/metrics")},
	{"egress all tcp ports, unnamed", out(tcp, "10.244.3.10:65535"), allow("metrics", "egress", "cidr:10.244.3.10/32")},
	{"egress all tcp ports, not udp", out(udp, "10.244.3.10:53"), deny("default", "default", "cidr:10.244.3.10/32")},
	{"egress https anywhere", out(tcp, "1.1.1.1:443"), allow("https", "egress", "cidr:0.0.0.0/0")},
	{"egress http nowhere", out(tcp, "1.1.1.1:80"), deny("default", "default", "cidr:1.1.1.1/32")},
	{"egress to a remote port 15001 is plain egress", out(tcp, "1.1.1.1:15001"), deny("default", "default", "cidr:1.1.1.1/32")},
	{"loopback deny wins over allow", lo(tcp, "127.0.0.1:15000", ""), deny("envoy-admin", "loopback", "cidr:127.0.0.1/32")},
	{"loopback allow rule", lo(tcp, "127.0.0.1:8080", ""), allow("app-ports", "loopback", "cidr:127.0.0.1/32")},
	{"loopback default", lo(tcp, "[::1]:25000", ""), allow("loopback-default", "loopback", "cidr:::1/128")},
	{"loopback udp default", lo(udp, "127.0.0.1:8080", ""), allow("loopback-default", "loopback", "cidr:127.0.0.1/32")},
	{"redirect to allowed peer", lo(tcp, "127.0.0.1:15001", "10.96.0.10:53"),
		redirected(allow("dns", "egress", "service:kube-system/kube-dns"))},
	{"redirect to linkerd", lo(tcp, "127.0.0.1:4140", "10.244.2.1:8000"),
		redirected(allow("api", "egress", "workload:shop/Deployment/api"))},
	{"redirect to denied peer", lo(tcp, "127.0.0.1:15001", "192.0.2.1:80"),
		redirected(deny("default", "default", "service:other/named"))},
	{"redirect behind loopback allow rule is still judged", lo(tcp, "127.0.0.1:15001", "1.1.1.1:80"),
		redirected(deny("default", "default", "cidr:1.1.1.1/32"))},
	{"hairpin to the pod's own address", Conn{Direction: policy.Loopback, Proto: tcp, Local: ap("10.244.0.5:40000"),
		Remote: ap("127.0.0.1:15006"), Original: ap("10.244.0.5:8080")},
		redirected(allow("app-ports", "loopback", "cidr:10.244.0.5/32"))},
	{"hairpin to a denied in-pod port", Conn{Direction: policy.Loopback, Proto: tcp, Local: ap("10.244.0.5:40000"),
		Remote: ap("127.0.0.1:15006"), Original: ap("10.244.0.5:15000")},
		redirected(deny("envoy-admin", "loopback", "cidr:10.244.0.5/32"))},
	{"redirect to a loopback address", lo(tcp, "127.0.0.1:15001", "127.0.0.2:25000"),
		redirected(allow("loopback-default", "loopback", "cidr:127.0.0.2/32"))},
	{"redirect with unknown original", lo(tcp, "127.0.0.1:15001", ""), deny("default", "origdst-unknown", "cidr:127.0.0.1/32")},
	{"direct connection to mesh port", lo(tcp, "127.0.0.1:15001", "127.0.0.1:15001"),
		allow("app-ports", "loopback", "cidr:127.0.0.1/32")},
	{"inbound redirect judged on original port", Conn{Direction: policy.Ingress, Proto: tcp,
		Remote: ap("10.244.1.3:5000"), Local: ap("10.244.0.5:15006"), Original: ap("10.244.0.5:8080")},
		redirected(allow("from-frontend", "ingress", "workload:shop/Deployment/frontend"))},
	{"inbound redirect to a closed port", Conn{Direction: policy.Ingress, Proto: tcp,
		Remote: ap("10.244.1.3:5000"), Local: ap("10.244.0.5:15006"), Original: ap("10.244.0.5:22")},
		redirected(deny("default", "default", "cidr:10.244.1.3/32"))},
	{"inbound redirect with unknown original", in(tcp, "10.244.1.3:5000", "10.244.0.5:15006"),
		deny("default", "origdst-unknown", "cidr:10.244.1.3/32")},
	{"ingress echo from frontend", ping(policy.Ingress, icmp, "10.244.1.3:0", "10.244.0.5:0", 8),
		allow("ping-from-frontend", "ingress", "workload:shop/Deployment/frontend")},
	{"ingress icmpv6 echo from frontend", ping(policy.Ingress, icmpv6, "[fd00:1::3]:0", "[fd00::5]:0", 128),
		allow("ping-from-frontend", "ingress", "workload:shop/Deployment/frontend")},
	{"ingress timestamp from frontend is not echo", ping(policy.Ingress, icmp, "10.244.1.3:0", "10.244.0.5:0", 13),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"ingress icmp type 128 is not icmpv6 echo", ping(policy.Ingress, icmp, "10.244.1.3:0", "10.244.0.5:0", 128),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"ingress echo from a stranger", ping(policy.Ingress, icmp, "192.0.2.1:0", "10.244.0.5:0", 8),
		deny("default", "default", "service:other/named")},
	{"ingress tcp to port 8 is not echo", in(tcp, "10.244.1.3:5000", "10.244.0.5:8"),
		deny("default", "default", "cidr:10.244.1.3/32")},
	{"egress icmp, every type", ping(policy.Egress, icmp, "1.1.1.1:0", "10.244.0.5:0", 13), allow("icmp-out", "egress", "cidr:1.1.1.0/24")},
	{"egress icmp is not icmpv6", ping(policy.Egress, icmpv6, "1.1.1.1:0", "10.244.0.5:0", 128),
		deny("default", "default", "cidr:1.1.1.1/32")},
	{"egress all tcp ports is not icmp", ping(policy.Egress, icmp, "10.244.3.9:0", "10.244.0.5:0", 8),
		deny("default", "default", "workload:shop/Deployment/metrics")},
	{"egress no ports is every icmp type", ping(policy.Egress, icmpv6, "10.244.2.7:0", "10.244.0.5:0", 200),
		allow("api-any", "egress", "service:shop/api-any")},
	{"no direction", Conn{Proto: tcp, Remote: ap("10.96.0.10:53")}, deny("default", "invalid-conn", "cidr:10.96.0.10/32")},
	{"no remote", Conn{Direction: policy.Egress, Proto: tcp}, deny("default", "invalid-conn", "")},
}

func TestDecide(t *testing.T) {
	d, err := New(mustPolicy(t, testPolicy), meshPorts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			want.Mode, want.Revision = policy.Protect, 7
			if diff := cmp.Diff(want, d.Decide(tc.conn)); diff != "" {
				t.Fatalf("Decide(%+v) (-want +got):\n%s", tc.conn, diff)
			}
		})
	}
}

// TestDecideModes checks that Monitor audits exactly what Protect denies and that Learn allows and
// records everything, keeping Protect's rule and evaluator in the line.
func TestDecideModes(t *testing.T) {
	for _, mode := range []policy.Mode{policy.Monitor, policy.Learn} {
		p := mustPolicy(t, testPolicy)
		p.Mode = mode
		d, err := New(p, meshPorts)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range decideCases {
			want := tc.want
			want.Mode, want.Revision = mode, 7
			switch {
			case mode == policy.Learn:
				want.Verdict, want.Record = policy.Allow, true
			case want.Verdict == policy.Deny:
				want.Verdict = policy.Audit
			}
			if diff := cmp.Diff(want, d.Decide(tc.conn)); diff != "" {
				t.Errorf("%s: %s (-want +got):\n%s", mode, tc.name, diff)
			}
		}
	}
}

// TestDecideCanary checks that a canary pod's policy marks every decision, so that each verdict line
// of the pod says it is a canary, and otherwise decides as the same policy does.
func TestDecideCanary(t *testing.T) {
	p := mustPolicy(t, testPolicy)
	p.Canary = true
	d, err := New(p, meshPorts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range decideCases {
		want := tc.want
		want.Mode, want.Revision, want.Canary = policy.Protect, 7, true
		if diff := cmp.Diff(want, d.Decide(tc.conn)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestOptions(t *testing.T) {
	p := mustPolicy(t, testPolicy)
	p.Mode = policy.Learn
	d, err := New(p, Options{Mode: policy.Protect})
	if err != nil {
		t.Fatal(err)
	}
	// Without mesh ports, a connection to 15001 is ordinary loopback traffic.
	got := d.Decide(lo(tcp, "127.0.0.1:15001", ""))
	want := Decision{Verdict: policy.Allow, Rule: "app-ports", Evaluator: "loopback", Peer: "cidr:127.0.0.1/32",
		Mode: policy.Protect, Revision: 7}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("no mesh ports (-want +got):\n%s", diff)
	}
	d, err = New(p, Options{MeshPorts: []uint16{8080}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Decide(lo(tcp, "127.0.0.1:8080", "")); got.Evaluator != "origdst-unknown" || got.Mode != policy.Learn {
		t.Fatalf("custom mesh port 8080: %+v", got)
	}
	if got := d.Decide(lo(tcp, "127.0.0.1:15001", "")); got.Evaluator != "loopback" {
		t.Fatalf("15001 is no mesh port when MeshPorts is set: %+v", got)
	}
}

// TestBuilderStreams: a Decider built from a streamed policy (the Builder fed by policy.Stream)
// decides as one built from the whole policy, and With changes its options alone.
func TestBuilderStreams(t *testing.T) {
	whole := mustPolicy(t, testPolicy)
	doc, err := json.Marshal(whole)
	if err != nil {
		t.Fatal(err)
	}
	var b Builder
	rest, err := policy.Stream(bytes.NewReader(doc), b.Add)
	if err != nil {
		t.Fatal(err)
	}
	streamed, err := b.Build(rest, Options{Mode: policy.Monitor})
	if err != nil {
		t.Fatal(err)
	}
	if streamed, err = streamed.With(meshPorts); err != nil {
		t.Fatal(err)
	}
	for _, tc := range decideCases {
		want := tc.want
		want.Mode, want.Revision = policy.Protect, 7
		if diff := cmp.Diff(want, streamed.Decide(tc.conn)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if _, err := streamed.With(Options{Mode: "Enforce"}); err == nil {
		t.Error("With took an unknown mode")
	}
}

func TestNewRejects(t *testing.T) {
	good := mustPolicy(t, testPolicy)
	bad := mustPolicy(t, testPolicy)
	bad.Egress[0].ID = "default"
	for _, tc := range []struct {
		name string
		p    *policy.Policy
		opts Options
		want string
	}{
		{"nil policy", nil, Options{}, "no policy"},
		{"invalid policy", bad, Options{}, "reserved"},
		{"bad mode", good, Options{Mode: "Enforce"}, "mode override"},
		{"mesh port 0", good, Options{MeshPorts: []uint16{15001, 0}}, "mesh port 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.p, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestDirectionAndVerdictNames(t *testing.T) {
	got := []string{policy.Ingress.String(), policy.Egress.String(), policy.Loopback.String(), policy.Direction(0).String(), policy.Direction(9).String(),
		policy.Allow.String(), policy.Deny.String(), policy.Audit.String(), policy.Verdict(0).String()}
	want := []string{"ingress", "egress", "loopback", "invalid", "invalid", "allow", "deny", "audit", "invalid"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
}

func TestDecideAllocations(t *testing.T) {
	d, err := New(mustPolicy(t, testPolicy), meshPorts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		conn Conn
		want float64
	}{
		{out(tcp, "10.96.0.10:53"), 0},      // named by its rule
		{out(tcp, "10.244.3.9:1"), 0},       // named by the policy
		{lo(tcp, "127.0.0.1:15000", ""), 1}, // unnamed: one string
		{out(tcp, "1.1.1.1:80"), 1},
	} {
		if n := testing.AllocsPerRun(100, func() { d.Decide(tc.conn) }); n != tc.want {
			t.Errorf("Decide(%+v) allocates %v times, want %v", tc.conn, n, tc.want)
		}
	}
}
