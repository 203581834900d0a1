package ui

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// filterEvents are verdicts of two namespaces, both verdicts, named and unnamed peers.
var filterEvents = []Event{
	{Seq: 1, Namespace: "shop", Workload: "Deployment/web", Pod: "web-1", Direction: "egress", Peer: "203.0.113.7",
		PeerAddr: "203.0.113.7", Name: "api.stripe.com", Protocol: "TCP", Port: 443, Verdict: "deny", Rule: "default", Evaluator: "default"},
	{Seq: 2, Namespace: "shop", Workload: "Deployment/api", Pod: "api-1", Direction: "ingress", Peer: "shop/Deployment/web",
		PeerAddr: "10.1.0.1", Protocol: "TCP", Port: 8080, Verdict: "audit", Rule: "default", Evaluator: "default", Mode: "Monitor"},
	{Seq: 3, Namespace: "billing", Workload: "Deployment/ledger", Pod: "ledger-1", Direction: "egress", Peer: "kube-system/Service/kube-dns",
		PeerAddr: "10.96.0.10", Name: "evil.example", Protocol: "UDP", Port: 53, Verdict: "deny", Rule: "default", Evaluator: "dns-query"},
	{Seq: 4, Namespace: "billing", Workload: "StatefulSet/web", Pod: "web-0", Direction: "egress", Peer: "2001:db8::5",
		PeerAddr: "2001:db8::5", Protocol: "TCP", Port: 443, Verdict: "audit", Rule: "r1", Evaluator: "cidr"},
}

func TestFilterMatch(t *testing.T) {
	tests := []struct {
		query string
		want  []uint64
	}{
		{"", []uint64{1, 2, 3, 4}},
		{"namespace=billing", []uint64{3, 4}},
		{"workload=Deployment/web", []uint64{1}},
		{"namespace=billing&workload=StatefulSet/web", []uint64{4}},
		{"verdict=audit", []uint64{2, 4}},
		{"port=443", []uint64{1, 4}},
		{"port=443&verdict=deny", []uint64{1}},
		// A peer as an address, a CIDR (IPv4 and IPv6), or text of its name or DNS name.
		{"peer=10.1.0.1", []uint64{2}},
		{"peer=10.0.0.0/8", []uint64{2, 3}},
		{"peer=2001:db8::/32", []uint64{4}},
		{"peer=KUBE-DNS", []uint64{3}},
		{"peer=stripe", []uint64{1}},
		{"peer=10.1", []uint64{}}, // neither an address nor a prefix, and no name holds it
		// Free text: every word somewhere, in any case, the DNS name included.
		{"q=stripe", []uint64{1}},
		{"q=EVIL.example", []uint64{3}},
		{"q=web+egress", []uint64{1, 4}},
		{"q=web+ingress", []uint64{2}},
		{"q=dns-query", []uint64{3}},
		{"q=monitor", []uint64{2}},
		{"q=nothing-has-this", []uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			f, err := ParseFilter(q)
			if err != nil {
				t.Fatal(err)
			}
			got := []uint64{}
			for _, v := range filterEvents {
				if f.Match(v) {
					got = append(got, v.Seq)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("matches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFilterRefuses(t *testing.T) {
	for _, query := range []string{"verdict=allow", "port=0", "port=65536", "port=http", "port=-1"} {
		q, _ := url.ParseQuery(query)
		if _, err := ParseFilter(q); err == nil {
			t.Errorf("ParseFilter(%s): no error", query)
		}
	}
}

// FuzzFilter: any query either is refused or gives a filter that matches without panicking, and a
// filter never matches a verdict its exact parts exclude.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"", "peer=10.0.0.0/8&port=53", "q=a+b", "peer=::ffff:10.1.0.1", "peer=1.2.3.4/40", "verdict=deny&namespace=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		fl, err := ParseFilter(q)
		if err != nil {
			if !strings.Contains(err.Error(), ": want ") {
				t.Errorf("error %q does not say what is wanted", err)
			}
			return
		}
		for _, v := range filterEvents {
			if fl.Match(v) && (fl.Namespace != "" && v.Namespace != fl.Namespace || fl.Port != 0 && v.Port != fl.Port) {
				t.Errorf("%s matches %+v", query, v)
			}
		}
	})
}
