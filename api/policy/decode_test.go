package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `
namespace: shop
workload: Deployment/web
revision: 7
mode: Protect
egress:
- id: dns
  origin: manifest
  peer: service:kube-system/kube-dns
  cidrs: [10.96.0.10/32]
  ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
- id: api
  origin: learned
  peer: workload:shop/Deployment/api
  cidrs: [10.244.1.0/24, "fd00::5/128"]
  ports: [{protocol: TCP, port: 8000, endPort: 8010}, {protocol: ICMP, types: [8]}, {protocol: ICMPv6}]
loopback:
- {id: envoy-admin, origin: manifest, action: deny, ports: [{protocol: TCP, port: 15000}]}
names:
  10.244.1.7: workload:shop/Deployment/api
`

func TestDecode(t *testing.T) {
	got, err := Decode([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := &Policy{
		Namespace: "shop", Workload: "Deployment/web", Revision: 7, Mode: Protect,
		Egress: []Rule{
			{ID: "dns", Origin: OriginManifest, Peer: "service:kube-system/kube-dns",
				CIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.10/32")},
				Ports: []PortRange{{Protocol: UDP, Port: 53}, {Protocol: TCP, Port: 53}}},
			{ID: "api", Origin: OriginLearned, Peer: "workload:shop/Deployment/api",
				CIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00::5/128")},
				Ports: []PortRange{{Protocol: TCP, Port: 8000, EndPort: 8010}, {Protocol: ICMP, Types: []uint16{8}}, {Protocol: ICMPv6}}},
		},
		Loopback: []LoopbackRule{{ID: "envoy-admin", Origin: OriginManifest, Action: ActionDeny,
			Ports: []PortRange{{Protocol: TCP, Port: 15000}}}},
		Names: map[netip.Addr]string{netip.MustParseAddr("10.244.1.7"): "workload:shop/Deployment/api"},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Fatalf("decode (-want +got):\n%s", d)
	}
}

// TestDecodeJSONMatchesYAML: the JSON fast path and the YAML path agree.
func TestDecodeJSONMatchesYAML(t *testing.T) {
	fromYAML, err := Decode([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(fromYAML)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Decode(append([]byte("\n  "), js...))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fromYAML, fromJSON, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Fatalf("JSON and YAML decode differ (-yaml +json):\n%s", d)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"mode", `{mode: Enforce}`, "mode"},
		{"unknown field", `{mode: Learn, extra: 1}`, "unknown field"},
		{"bad cidr", `{mode: Learn, egress: [{id: a, origin: user, cidrs: [10.0.0.300/32]}]}`, "decode"},
		{"host bits", `{mode: Learn, egress: [{id: a, origin: user, cidrs: [10.0.0.1/8]}]}`, "host bits"},
		{"duplicate id", `{mode: Learn, egress: [{id: a, origin: user}], ingress: [{id: a, origin: user}]}`, "not unique"},
		{"reserved id", `{mode: Learn, egress: [{id: default, origin: user}]}`, "reserved"},
		{"reserved loopback id", `{mode: Learn, loopback: [{id: loopback-default, origin: user, action: allow, ports: [{protocol: TCP, port: 1}]}]}`, "reserved"},
		{"origin", `{mode: Learn, egress: [{id: a, origin: magic}]}`, "origin"},
		{"protocol", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: GRE}]}]}`, "protocol"},
		{"icmp port", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: ICMP, port: 8}]}]}`, "no ports"},
		{"icmp type", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: ICMPv6, types: [128, 256]}]}]}`, "above 255"},
		{"types for tcp", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: TCP, port: 1, types: [8]}]}]}`, "ICMP and ICMPv6 only"},
		{"loopback icmp", `{mode: Learn, loopback: [{id: a, origin: user, action: deny, ports: [{protocol: ICMP}]}]}`, "loopback rules name ports"},
		{"range", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: TCP, port: 9, endPort: 3}]}]}`, "range"},
		{"port overflow", `{mode: Learn, egress: [{id: a, origin: user, ports: [{protocol: TCP, port: 70000}]}]}`, "decode"},
		{"loopback action", `{mode: Learn, loopback: [{id: a, origin: user, action: maybe, ports: [{protocol: TCP, port: 1}]}]}`, "action"},
		{"loopback ports", `{mode: Learn, loopback: [{id: a, origin: user, action: deny}]}`, "no ports"},
		{"negative revision", `{mode: Learn, revision: -1}`, "negative"},
		{"not a policy", `[1, 2]`, "decode"},
		{"json unknown field", `{"mode": "Learn", "extra": 1}`, "unknown field"},
		{"json trailing data", `{"mode": "Learn"} {"mode": "Protect"}`, "after the policy"},
		{"json bad cidr", `{"mode": "Learn", "egress": [{"id": "a", "origin": "user", "cidrs": ["10.0.0.300/32"]}]}`, "decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode(%s) = %v, want error containing %q", tc.doc, err, tc.want)
			}
		})
	}
}

func TestProtocolNumbers(t *testing.T) {
	for _, p := range []Protocol{TCP, UDP, SCTP, ICMP, ICMPv6} {
		if got := ProtocolOf(p.Number()); got != p {
			t.Errorf("ProtocolOf(%d) = %q, want %q", p.Number(), got, p)
		}
	}
	if got := ProtocolOf(47); got != "" {
		t.Errorf("ProtocolOf(47) = %q, want none", got)
	}
}

func TestPortBounds(t *testing.T) {
	for _, tc := range []struct {
		r      PortRange
		lo, hi uint16
	}{{PortRange{Protocol: TCP}, 0, 65535}, {PortRange{Protocol: TCP, Port: 80}, 80, 80},
		{PortRange{Protocol: TCP, Port: 80, EndPort: 90}, 80, 90}} {
		if lo, hi := tc.r.Bounds(); lo != tc.lo || hi != tc.hi {
			t.Errorf("%+v.Bounds() = %d, %d; want %d, %d", tc.r, lo, hi, tc.lo, tc.hi)
		}
	}
}

// FuzzDecode checks that no input panics the decoder and that whatever it accepts is valid and
// survives a JSON round trip unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"mode":"Learn"}`))
	f.Add([]byte(`{mode: Protect, ingress: [{id: x, origin: user, cidrs: ["::/0"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid policy: %v", err)
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, _ := json.Marshal(again)
		if string(out) != string(out2) {
			t.Fatalf("round trip changed the policy:\n%s\n%s", out, out2)
		}
	})
}

// unmarshalPolicy is what Decode did with JSON before it streamed: the whole document into a Policy,
// then Validate.
func unmarshalPolicy(data []byte) (*Policy, error) {
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the policy object")
	}
	return &p, p.Validate()
}

// TestStreamMatchesUnmarshal: Stream (through Decode) accepts what decoding the whole JSON document
// accepts, as the same policy, and refuses what it refuses.
func TestStreamMatchesUnmarshal(t *testing.T) {
	for _, doc := range []string{
		`{"mode":"Learn"}`,
		`{"Mode":"Learn","EGRESS":[{"id":"a","origin":"user","cidrs":["10.0.0.0/8"]}]}`,
		`{"egress":[{"id":"a","origin":"user"}],"mode":"Protect","ingress":null,"names":{"10.0.0.1":"x"}}`,
		`{"mode":"Protect","ingress":[{"id":"a","origin":"user","names":["x.example"]}]}`,
		`{"mode":"Protect","egress":[{"id":"a","origin":"user"}],"loopback":[{"id":"a","origin":"user","action":"deny","ports":[{"protocol":"TCP","port":1}]}]}`,
		`{"mode":"Protect","egress":[{"id":"a","origin":"user","extra":1}]}`,
		`{"mode":"Protect","egress":{"id":"a"}}`,
		`{"mode":"Protect","egress":[{"id":"a","origin":"user"},]}`,
		`{"mode":"Protect","egress":[{"id":"a","origin":"user"}]`,
		`{"mode":"Protect","egress":[]} x`,
		`{"mode":"Protect","canary":true,"restrictDNS":true,"egress":[{"id":"a","origin":"user","names":["*.example.com"],"ports":[{"protocol":"TCP","port":443}]}]}`,
	} {
		want, werr := unmarshalPolicy([]byte(doc))
		got, gerr := Decode([]byte(doc))
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%s: whole decode says %v, Decode says %v", doc, werr, gerr)
			continue
		}
		if werr != nil {
			continue
		}
		if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
			cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
			t.Errorf("%s: (-whole +stream):\n%s", doc, d)
		}
	}
}

// TestStreamRefuses: what Stream refuses beyond the whole decode (a rule array given twice), and a
// document over the size limit, which it stops reading.
func TestStreamRefuses(t *testing.T) {
	none := func(Direction, Rule) error { return nil }
	_, err := Stream(strings.NewReader(`{"mode":"Learn","egress":[],"Egress":[]}`), none)
	if err == nil || !strings.Contains(err.Error(), "egress given twice") {
		t.Errorf("rule array twice: %v", err)
	}
	huge := io.MultiReader(strings.NewReader(`{"mode":"Learn",`), neverEnding(' '))
	if _, err := Stream(huge, none); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("over the limit: %v", err)
	}
	stop := errors.New("stop")
	_, err = Stream(strings.NewReader(`{"mode":"Learn","egress":[{"id":"a","origin":"user"},{"id":"b","origin":"user"}]}`),
		func(Direction, Rule) error { return stop })
	if err != stop {
		t.Errorf("an error of the rule func: got %v, want it as it is", err)
	}
}

// neverEnding reads as an endless run of one byte.
type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// TestStreamYAMLOnlyFromTheStart: a document whose rules start as JSON is not retried as YAML.
func TestStreamYAMLOnlyFromTheStart(t *testing.T) {
	_, err := Stream(strings.NewReader(`{mode: Learn}`), func(Direction, Rule) error { return nil })
	if !NotJSON(err) {
		t.Errorf("YAML flow style: %v, want NotJSON", err)
	}
	doc := `{"mode":"Learn","egress":[{"id":"a","origin":"user"},{id: b, origin: user}]}`
	_, err = Stream(strings.NewReader(doc), func(Direction, Rule) error { return nil })
	if err == nil || NotJSON(err) {
		t.Errorf("JSON broken after a rule: %v, want a JSON error", err)
	}
	if _, err := Decode([]byte(doc)); err == nil {
		t.Error("Decode took a document broken after its first JSON rule")
	}
}

// FuzzStream checks that Stream, through Decode, agrees with the whole decode on any JSON document:
// both accept it, as the same policy, or both refuse it (or only Stream, for a rule array given twice).
func FuzzStream(f *testing.F) {
	f.Add([]byte(`{"mode":"Learn","egress":[{"id":"a","origin":"user","cidrs":["10.0.0.0/8"]}]}`))
	f.Add([]byte(`{"mode":"Protect","Ingress":[{"id":"a","origin":"user"}],"names":{"::1":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		want, werr := unmarshalPolicy(data)
		got, gerr := Decode(data)
		if gerr != nil && strings.Contains(gerr.Error(), "given twice") {
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("whole decode says %v, Decode says %v", werr, gerr)
		}
		if werr == nil {
			a, _ := json.Marshal(want)
			b, _ := json.Marshal(got)
			if !bytes.Equal(a, b) {
				t.Fatalf("whole decode and Stream differ:\n%s\n%s", a, b)
			}
		}
	})
}

// TestRepeatedID: of several repeated ids, the one whose second rule comes first in policy order is
// reported, at that rule, loopback rules included.
func TestRepeatedID(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"mode":"Learn","ingress":[{"id":"b","origin":"user"},{"id":"a","origin":"user"}],"egress":[{"id":"a","origin":"user"},{"id":"b","origin":"user"}]}`,
			`egress[0]: rule id "a" is not unique`},
		{`{"mode":"Learn","egress":[{"id":"z","origin":"user"}],"loopback":[{"id":"y","origin":"user","action":"deny","ports":[{"protocol":"TCP","port":1}]},{"id":"z","origin":"user","action":"deny","ports":[{"protocol":"TCP","port":1}]}]}`,
			`loopback[1]: rule id "z" is not unique`},
	} {
		if _, err := Decode([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.doc, err, tc.want)
		}
	}
}
