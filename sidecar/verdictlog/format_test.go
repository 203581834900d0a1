package verdictlog

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/sidecar/decide"
)

func TestAppendString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{`q"b\`, `"q\"b\\"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"héllo ☃", `"héllo ☃"`},
		{"bad\xffutf8\xc3", `"bad\ufffdutf8\ufffd"`},
		{"", `""`},
	} {
		if got := string(appendString(nil, tc.in)); got != tc.want {
			t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestAppendAddrPortZone(t *testing.T) {
	ap := netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("a\"b\n"), 80)
	var got string
	if err := json.Unmarshal(appendAddrPort(nil, ap), &got); err != nil || got != ap.String() {
		t.Fatalf("zoned address: %q, %v", got, err)
	}
}

// FuzzAppendString checks that any string becomes a JSON string that decodes to the same text, with
// each byte of invalid UTF-8 replaced by U+FFFD as encoding/json does.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"\\\n\x00", "\xff\xfe", "☃\u2028", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, out, err)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("appendString(%q) decodes to %q, want %q", s, got, want)
		}
		std, _ := json.Marshal(s)
		var viaStd string
		if err := json.Unmarshal(std, &viaStd); err != nil || viaStd != got {
			t.Fatalf("encoding/json decodes %q to %q, ours to %q", s, viaStd, got)
		}
	})
}

// FuzzLine checks that a whole line is one JSON object that decodes strictly into verdict.Line, with
// the values logged, whatever the identity, policy strings, DNS name and addresses hold.
func FuzzLine(f *testing.F) {
	f.Add("web", "ns\n", "peer\"", "rule", "api.example.com", []byte{10, 0, 0, 1}, uint16(80), uint8(6))
	f.Add("", "", "\xff", "", "", []byte{0xfd, 15: 1}, uint16(0), uint8(200))
	f.Add("web", "ns", "cidr:10.96.0.10/32", "default", "x\"\x00.\xc3", []byte{10, 96, 0, 10}, uint16(53), uint8(17))
	f.Fuzz(func(t *testing.T, pod, ns, peer, rule, name string, addr []byte, port uint16, proto uint8) {
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		l := &Logger{identity: appendIdentity(nil, Identity{Pod: pod, Namespace: ns, Workload: peer})}
		c := decide.Conn{Direction: policy.Loopback, Proto: proto, Local: netip.AddrPortFrom(a, port),
			Remote: netip.AddrPortFrom(a, port), Original: netip.AddrPortFrom(a, port+1)}
		d := decide.Decision{Verdict: policy.Deny, Rule: rule, Evaluator: peer, Peer: peer, Name: name, Redirected: true,
			Mode: policy.Mode(rule), Revision: int64(port), Canary: port%2 == 1}
		line := l.appendLine(nil, t0, &c, &d)
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("not one line: %q", line)
		}
		// Invalid UTF-8 comes back as U+FFFD.
		valid := func(s string) string { return string([]rune(s)) }
		want := verdict.Line{Time: t0, Pod: valid(pod), Namespace: valid(ns), Workload: valid(peer),
			Direction: c.Direction, Proto: verdict.Proto(proto), Src: c.Src(), Dst: c.Dst(), Peer: valid(peer),
			DstName: valid(name), Verdict: d.Verdict, Rule: valid(rule), Mode: policy.Mode(valid(rule)), PolicyRevision: d.Revision,
			Canary: d.Canary, Evaluator: valid(peer), OriginalDst: c.Original}
		if diff := cmp.Diff(want, decodeStrict(t, line), sameLine); diff != "" {
			t.Fatalf("line %s (-want +got):\n%s", line, diff)
		}
	})
}

// TestSummaryLine checks that a summary line, with every count distinct, decodes strictly into
// verdict.Line.
func TestSummaryLine(t *testing.T) {
	l := &Logger{identity: appendIdentity(nil, id)}
	s := suppressed{rateLimited: 6, dropped: 6, byVerdict: [...]uint64{policy.Allow: 1, policy.Deny: 6, policy.Audit: 2,
		policy.Revoked: 3}, since: t0.Add(-time.Minute)}
	want := verdict.Line{Time: t0, Pod: id.Pod, Namespace: id.Namespace, Workload: id.Workload, Suppressed: 12,
		RateLimited: 6, Dropped: 6, SuppressedDeny: 6, SuppressedAudit: 2, SuppressedAllow: 1, SuppressedRevoked: 3,
		Since: s.since}
	if diff := cmp.Diff(want, decodeStrict(t, l.appendSummary(nil, t0, &s)), sameLine); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
}

// sameLine compares verdict.Lines, whose addresses cmp cannot look into.
var sameLine = cmpopts.EquateComparable(netip.AddrPort{})

// decodeStrict decodes one line into verdict.Line, refusing fields it does not know.
func decodeStrict(t *testing.T, line []byte) verdict.Line {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var l verdict.Line
	if err := dec.Decode(&l); err != nil || dec.More() {
		t.Fatalf("line %s: %v", line, err)
	}
	return l
}
