package policyapi

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestDecodeReport(t *testing.T) {
	entry := `{"direction":"egress","peer":"10.0.0.1","protocol":"TCP","port":80,"count":1}`
	named := `{"direction":"egress","peer":"203.0.113.7","protocol":"TCP","port":443,"name":"api.stripe.com","count":1}`
	tests := []struct{ body, want string }{
		{`{"revision":1,"entries":[` + entry + `]}`, ""},
		{`{"revision":1,"entries":[]} `, ""},
		{`{"revision":1,"entries":[]} {}`, "data after"},
		{`{"revision":1,"entries":[]}x`, "data after"},
		{`{"revision":1,"extra":1}`, "unknown field"},
		{`{"revision":1,"entries":[` + named + `]}`, ""},
		{`{"revision":1,"entries":[` + strings.Replace(named, "api.stripe.com", "API.stripe.com.", 1) + `]}`, "lower case"},
		{`{"revision":1,"entries":[` + strings.Replace(named, "egress", "ingress", 1) + `]}`, "egress entries only"},
		{`{"revision":-1}`, "negative"},
		{`[]`, "decode report"},
		{``, "decode report"},
	}
	for _, tc := range tests {
		_, err := decodeReport(strings.NewReader(tc.body))
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("decodeReport(%q) = %v, want error containing %q", tc.body, err, tc.want)
		}
	}
}

// FuzzDecodeReport: no input panics, and an accepted report survives a round trip unchanged.
func FuzzDecodeReport(f *testing.F) {
	for _, s := range []string{
		`{"revision":1,"entries":[{"direction":"egress","peer":"10.0.0.1","protocol":"TCP","port":80,"count":1}]}`,
		`{"namespace":"a","workload":"Deployment/b","pod":"c","revision":0,"mode":"Learn","dropped":3,"entries":[{"direction":"ingress","peer":"fd00::1","protocol":"UDP","port":53,"count":9,"verdict":"audit","firstSeen":"2026-01-01T00:00:00Z"}]}`,
		`{"revision":1}{}`, `{"entries":[{"peer":"::ffff:1.2.3.4"}]}`,
		`{"revision":1,"entries":[{"direction":"egress","peer":"203.0.113.7","protocol":"TCP","port":443,"name":"*.stripe.com","count":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rep, err := decodeReport(bytes.NewReader(body))
		if err != nil {
			return
		}
		out, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeReport(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("accepted report does not decode again: %v\n%s", err, out)
		}
		if d := cmp.Diff(rep, again, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Fatalf("round trip changed the report:\n%s", d)
		}
	})
}
