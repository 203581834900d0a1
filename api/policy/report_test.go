package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestReportValidate(t *testing.T) {
	good := func() Report {
		return Report{Revision: 3, Mode: Learn, Entries: []ReportEntry{
			{Direction: Egress, Peer: netip.MustParseAddr("10.0.0.1"), Protocol: TCP, Port: 443, Count: 2, Verdict: Allow, Rule: "default", Evaluator: "egress"},
		}}
	}
	tests := []struct {
		name   string
		mutate func(*Report)
		want   string
	}{
		{"valid", func(*Report) {}, ""},
		{"negative revision", func(r *Report) { r.Revision = -1 }, "negative"},
		{"bad mode", func(r *Report) { r.Mode = "Off" }, "mode"},
		{"bad direction", func(r *Report) { r.Entries[0].Direction = 9 }, "direction"},
		{"no peer", func(r *Report) { r.Entries[0].Peer = netip.Addr{} }, "peer"},
		{"bad protocol", func(r *Report) { r.Entries[0].Protocol = "GRE" }, "protocol"},
		{"port 0", func(r *Report) { r.Entries[0].Port = 0 }, "port 0"},
		{"icmp without port", func(r *Report) { r.Entries[0].Protocol, r.Entries[0].Port = ICMP, 0 }, ""},
		{"icmpv6 without port", func(r *Report) { r.Entries[0].Protocol, r.Entries[0].Port = ICMPv6, 0 }, ""},
		{"icmp with a port", func(r *Report) { r.Entries[0].Protocol = ICMP }, "port 443"},
		{"count 0", func(r *Report) { r.Entries[0].Count = 0 }, "count 0"},
		{"bad verdict", func(r *Report) { r.Entries[0].Verdict = 9 }, "verdict"},
		{"too many", func(r *Report) { r.Entries = make([]ReportEntry, MaxReportEntries+1) }, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.mutate(&r)
			err := r.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestReportJSONRefusesUnknownNames(t *testing.T) {
	for _, in := range []string{
		`{"revision":1,"entries":[{"direction":"up","peer":"10.0.0.1","protocol":"TCP","port":1,"count":1}]}`,
		`{"revision":1,"entries":[{"direction":"egress","peer":"10.0.0.1","protocol":"TCP","port":1,"count":1,"verdict":"maybe"}]}`,
	} {
		var r Report
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("%s decoded", in)
		}
	}
}

func TestReportJSON(t *testing.T) {
	in := `{"revision":7,"entries":[{"direction":"ingress","peer":"fd00::1","protocol":"UDP","port":53,"count":1,"verdict":"deny","rule":"default","evaluator":"ingress"}]}`
	var r Report
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(&r)
	if string(out) != in {
		t.Errorf("round trip:\n got %s\nwant %s", out, in)
	}
}
