package decide

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

const fqdnPolicy = `
namespace: shop
workload: Deployment/web
revision: 3
mode: Protect
restrictDNS: true
names:
  10.96.0.10: "service:kube-system/kube-dns"
egress:
- {id: dns, origin: manifest, peer: "service:kube-system/kube-dns", cidrs: [10.96.0.10/32],
   ports: [{protocol: UDP, port: 53}]}
- {id: stripe, origin: user, peer: "fqdn:api.stripe.com", names: [api.stripe.com], ports: [{protocol: TCP, port: 443}]}
- {id: buckets, origin: user, peer: "fqdn:*.s3.amazonaws.com", names: ["*.s3.amazonaws.com"],
   ports: [{protocol: TCP, port: 443}, {protocol: TCP, port: 80}]}
- {id: git, origin: user, peer: "fqdn:git.example.com", cidrs: [192.0.2.0/24], names: [git.example.com],
   ports: [{protocol: TCP, port: 22}]}
`

var searchDomains = []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}

// named is an egress connection to remote, whose address the pod resolved from names.
func named(proto uint8, remote string, names ...string) Conn {
	c := out(proto, remote)
	c.Names = names
	return c
}

func withName(d Decision, name string) Decision {
	d.Name = name
	return d
}

var fqdnCases = []decideCase{
	{"exact name", named(tcp, "203.0.113.5:443", "api.stripe.com"),
		withName(allow("stripe", "egress", "fqdn:api.stripe.com"), "api.stripe.com")},
	{"exact name, other port", named(tcp, "203.0.113.5:80", "api.stripe.com"),
		withName(deny("default", "default", "cidr:203.0.113.5/32"), "api.stripe.com")},
	{"exact name, other protocol", named(udp, "203.0.113.5:443", "api.stripe.com"),
		withName(deny("default", "default", "cidr:203.0.113.5/32"), "api.stripe.com")},
	{"wildcard", named(tcp, "203.0.113.6:80", "bucket.s3.amazonaws.com"),
		withName(allow("buckets", "egress", "fqdn:*.s3.amazonaws.com"), "bucket.s3.amazonaws.com")},
	{"wildcard is one label", named(tcp, "203.0.113.6:80", "a.bucket.s3.amazonaws.com"),
		withName(deny("default", "default", "cidr:203.0.113.6/32"), "a.bucket.s3.amazonaws.com")},
	{"wildcard is not the apex", named(tcp, "203.0.113.6:80", "s3.amazonaws.com"),
		withName(deny("default", "default", "cidr:203.0.113.6/32"), "s3.amazonaws.com")},
	{"no names", out(tcp, "203.0.113.5:443"), deny("default", "default", "cidr:203.0.113.5/32")},
	{"shared address, allowed name's port", named(tcp, "203.0.113.7:443", "evil.example.org", "api.stripe.com"),
		withName(allow("stripe", "egress", "fqdn:api.stripe.com"), "api.stripe.com")},
	{"shared address, only the allowed name's ports", named(tcp, "203.0.113.7:80", "evil.example.org", "api.stripe.com"),
		withName(deny("default", "default", "cidr:203.0.113.7/32"), "evil.example.org")},
	{"two rules match: policy order, not name order", named(tcp, "203.0.113.8:443", "x.s3.amazonaws.com", "api.stripe.com"),
		withName(allow("stripe", "egress", "fqdn:api.stripe.com"), "api.stripe.com")},
	{"earlier address rule wins", named(udp, "10.96.0.10:53", "api.stripe.com"),
		withName(allow("dns", "egress", "service:kube-system/kube-dns"), "api.stripe.com")},
	{"rule with address and name, by address", out(tcp, "192.0.2.9:22"), allow("git", "egress", "fqdn:git.example.com")},
	{"rule with address and name, by name", named(tcp, "198.51.100.1:22", "git.example.com"),
		withName(allow("git", "egress", "fqdn:git.example.com"), "git.example.com")},
	{"redirected to an allowed name", Conn{Direction: policy.Loopback, Proto: tcp, Local: ap("127.0.0.1:40000"),
		Remote: ap("127.0.0.1:15001"), Original: ap("203.0.113.5:443"), Names: []string{"api.stripe.com"}},
		redirected(withName(allow("stripe", "egress", "fqdn:api.stripe.com"), "api.stripe.com"))},
	{"redirected, other port", Conn{Direction: policy.Loopback, Proto: tcp, Local: ap("127.0.0.1:40000"),
		Remote: ap("127.0.0.1:15001"), Original: ap("203.0.113.5:80"), Names: []string{"api.stripe.com"}},
		redirected(withName(deny("default", "default", "cidr:203.0.113.5/32"), "api.stripe.com"))},
	{"names do not judge ingress", Conn{Direction: policy.Ingress, Proto: tcp, Remote: ap("203.0.113.5:5000"),
		Local: ap("10.244.0.5:443"), Names: []string{"api.stripe.com"}}, deny("default", "default", "cidr:203.0.113.5/32")},
}

type queryCase struct {
	name string
	want Decision // in Protect with RestrictDNS
}

var queryCases = []queryCase{
	{"api.stripe.com", allow("stripe", "dns-query", "service:kube-system/kube-dns")},
	{"bucket.s3.amazonaws.com", allow("buckets", "dns-query", "service:kube-system/kube-dns")},
	{"a.bucket.s3.amazonaws.com", deny("default", "dns-query", "service:kube-system/kube-dns")},
	{"git.example.com", allow("git", "dns-query", "service:kube-system/kube-dns")},
	{"kubernetes.default.svc.cluster.local", allow("search-domain", "dns-query", "service:kube-system/kube-dns")},
	{"cluster.local", allow("search-domain", "dns-query", "service:kube-system/kube-dns")},
	{"evilcluster.local", deny("default", "dns-query", "service:kube-system/kube-dns")},
	{"exfil-c2VjcmV0.evil.example.org", deny("default", "dns-query", "service:kube-system/kube-dns")},
}

// query is a DNS query's flow to the resolver.
var query = Conn{Direction: policy.Egress, Proto: udp, Local: ap("10.244.0.5:40000"), Remote: ap("10.96.0.10:53")}

func fqdnDecider(t testing.TB, mode policy.Mode, restrict bool) *Decider {
	t.Helper()
	p := mustPolicy(t, fqdnPolicy)
	p.Mode, p.RestrictDNS = mode, restrict
	d, err := New(p, Options{MeshPorts: meshPorts.MeshPorts, SearchDomains: searchDomains})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// inMode is want, a Protect decision, as mode makes it.
func inMode(want Decision, mode policy.Mode) Decision {
	want.Mode, want.Revision = mode, 3
	switch {
	case mode == policy.Learn:
		want.Verdict, want.Record = policy.Allow, true
	case mode == policy.Monitor && want.Verdict == policy.Deny:
		want.Verdict = policy.Audit
	}
	return want
}

// TestDecideFQDN: FQDN rules match a connection by the names its address was resolved from and by
// their ports, in each mode.
func TestDecideFQDN(t *testing.T) {
	for _, mode := range []policy.Mode{policy.Protect, policy.Monitor, policy.Learn} {
		d := fqdnDecider(t, mode, true)
		for _, tc := range fqdnCases {
			if diff := cmp.Diff(inMode(tc.want, mode), d.Decide(tc.conn)); diff != "" {
				t.Errorf("%s: %s: Decide(%+v) (-want +got):\n%s", mode, tc.name, tc.conn, diff)
			}
		}
	}
}

// TestDecideQuery: with RestrictDNS, a query is allowed for names under the search domains and names
// a rule's pattern matches, and denied (audited in Monitor, allowed and recorded in Learn) for the
// rest; without RestrictDNS every query is allowed.
func TestDecideQuery(t *testing.T) {
	for _, mode := range []policy.Mode{policy.Protect, policy.Monitor, policy.Learn} {
		restricted, open := fqdnDecider(t, mode, true), fqdnDecider(t, mode, false)
		for _, tc := range queryCases {
			want := withName(inMode(tc.want, mode), tc.name)
			if diff := cmp.Diff(want, restricted.DecideQuery(query, tc.name)); diff != "" {
				t.Errorf("%s, restricted: DecideQuery(%s) (-want +got):\n%s", mode, tc.name, diff)
			}
			want = withName(inMode(allow("dns", "egress", "service:kube-system/kube-dns"), mode), tc.name) // judged as its flow
			if diff := cmp.Diff(want, open.DecideQuery(query, tc.name)); diff != "" {
				t.Errorf("%s, not restricted: DecideQuery(%s) (-want +got):\n%s", mode, tc.name, diff)
			}
		}
	}
}

// TestDecideFQDNAllocations: the FQDN allow path allocates nothing, and neither does a query.
func TestDecideFQDNAllocations(t *testing.T) {
	d := fqdnDecider(t, policy.Protect, true)
	for _, c := range []Conn{
		named(tcp, "203.0.113.8:443", "x.s3.amazonaws.com", "api.stripe.com"),
		named(tcp, "198.51.100.1:22", "git.example.com"),
	} {
		if n := testing.AllocsPerRun(100, func() { d.Decide(c) }); n != 0 {
			t.Errorf("Decide(%+v) allocates %v times, want 0", c, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { d.DecideQuery(query, "api.stripe.com") }); n != 0 {
		t.Errorf("DecideQuery allocates %v times, want 0", n)
	}
}
