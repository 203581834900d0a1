package verdictlog

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	"podwall.io/podwall/api/policy"
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

// FuzzLine checks that a whole line is one valid JSON object whatever the identity, policy strings and
// addresses hold.
func FuzzLine(f *testing.F) {
	f.Add("web", "ns\n", "peer\"", "rule", []byte{10, 0, 0, 1}, uint16(80), uint8(6))
	f.Add("", "", "\xff", "", []byte{0xfd, 15: 1}, uint16(0), uint8(200))
	f.Fuzz(func(t *testing.T, pod, ns, peer, rule string, addr []byte, port uint16, proto uint8) {
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		l := &Logger{identity: appendIdentity(nil, Identity{Pod: pod, Namespace: ns, Workload: peer})}
		c := decide.Conn{Direction: policy.Loopback, Proto: proto, Local: netip.AddrPortFrom(a, port),
			Remote: netip.AddrPortFrom(a, port), Original: netip.AddrPortFrom(a, port+1)}
		d := decide.Decision{Verdict: policy.Deny, Rule: rule, Evaluator: peer, Peer: peer, Redirected: true,
			Mode: policy.Mode(rule), Revision: int64(port)}
		line := l.appendLine(nil, t0, &c, &d)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %s: %v", line, err)
		}
		if m["pod"] != string([]rune(pod)) || m["peer"] != string([]rune(peer)) || m["rule"] != string([]rune(rule)) {
			t.Fatalf("fields did not survive: %s", line)
		}
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("not one line: %q", line)
		}
	})
}
