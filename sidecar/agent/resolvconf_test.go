package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"podwall.io/podwall/api/policy"
)

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name, file string
		want       resolvConf
	}{{
		name: "kubernetes",
		file: "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
		want: resolvConf{Servers: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")},
			Search: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}},
	}, {
		name: "three servers at most, comments, zones and case",
		file: "# generated\nnameserver 10.0.0.1 ; primary\nnameserver fe80::1%eth0\nnameserver ::ffff:10.0.0.3\nnameserver 10.0.0.4\nsearch Example.COM.\n",
		want: resolvConf{Servers: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"),
			netip.MustParseAddrPort("[fe80::1]:53"), netip.MustParseAddrPort("10.0.0.3:53")},
			Search: []string{"example.com"}},
	}, {
		name: "the last search or domain line wins; not an address is skipped",
		file: "domain a.example\nnameserver dns.example\nsearch b.example c.example\ndomain d.example\nnameserver 10.0.0.1\n",
		want: resolvConf{Servers: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53")}, Search: []string{"d.example"}},
	}, {
		name: "nothing useful",
		file: "nameserver\nsearch . .. a..b\noptions rotate\n\x00\xff",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseResolvConf([]byte(tc.file))
			if d := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.AddrPort{})); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// FuzzParseResolvConf: any file parses without a panic into at most three zoneless port-53 servers
// and canonical search domains.
func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("search a.example b.example\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions ndots:5\n"))
	f.Add([]byte("domain X.\nnameserver ::1 ;x\n#nameserver 1.1.1.1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rc := parseResolvConf(data)
		if len(rc.Servers) > maxNameservers {
			t.Fatalf("%d servers", len(rc.Servers))
		}
		for _, s := range rc.Servers {
			if !s.IsValid() || s.Port() != 53 || s.Addr().Zone() != "" || s.Addr().Is4In6() {
				t.Fatalf("server %v", s)
			}
		}
		for _, d := range rc.Search {
			if d != policy.CanonicalName(d) || slices.Contains(strings.Split(d, "."), "") {
				t.Fatalf("search domain %q", d)
			}
		}
	})
}
