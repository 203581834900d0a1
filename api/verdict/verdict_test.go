package verdict

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"podwall.io/podwall/api/policy"
)

func TestProtoJSON(t *testing.T) {
	for _, tc := range []struct {
		p    Proto
		json string
	}{{1, `"ICMP"`}, {6, `"TCP"`}, {17, `"UDP"`}, {58, `"ICMPv6"`}, {132, `"SCTP"`}, {0, `0`}, {47, `47`}, {255, `255`}} {
		b, err := json.Marshal(tc.p)
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal(%d) = %s, %v; want %s", tc.p, b, err, tc.json)
		}
		var got Proto
		if err := json.Unmarshal([]byte(tc.json), &got); err != nil || got != tc.p {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d", tc.json, got, err, tc.p)
		}
	}
	for _, bad := range []string{`"tcp"`, `"GRE"`, `256`, `-1`, `6.0`, `true`} {
		var p Proto
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("Unmarshal(%s) = %d, want an error", bad, p)
		}
	}
}

// TestLineJSON checks that a Line encodes with the documented field names and decodes back, for both
// kinds of line.
func TestLineJSON(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 3, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		line Line
		json string
	}{{
		Line{Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web", Direction: policy.Egress,
			Proto: 6, Src: netip.MustParseAddrPort("10.244.0.5:40000"), Dst: netip.MustParseAddrPort("1.1.1.1:80"),
			Peer: "cidr:1.1.1.1/32", Verdict: policy.Deny, Rule: "default", Mode: policy.Protect, PolicyRevision: 7,
			Evaluator: "default", OriginalDst: netip.MustParseAddrPort("[fd00::1]:443")},
		`{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",` +
			`"direction":"egress","proto":"TCP","src":"10.244.0.5:40000","dst":"1.1.1.1:80","peer":"cidr:1.1.1.1/32",` +
			`"verdict":"deny","rule":"default","mode":"Protect","policy_revision":7,"evaluator":"default",` +
			`"original_dst":"[fd00::1]:443"}`,
	}, {
		Line{Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web", Direction: policy.Ingress,
			Proto: 17, Src: netip.MustParseAddrPort("10.244.0.9:5353"), Dst: netip.MustParseAddrPort("10.244.0.5:53"),
			Peer: "cidr:10.244.0.9/32", Verdict: policy.Revoked, Rule: "default", Mode: policy.Protect, PolicyRevision: 8,
			Evaluator: "default"},
		`{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",` +
			`"direction":"ingress","proto":"UDP","src":"10.244.0.9:5353","dst":"10.244.0.5:53","peer":"cidr:10.244.0.9/32",` +
			`"verdict":"revoked","rule":"default","mode":"Protect","policy_revision":8,"evaluator":"default"}`,
	}, {
		Line{Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web", Suppressed: 12,
			RateLimited: 10, Dropped: 2, SuppressedDeny: 10, SuppressedAudit: 0, SuppressedAllow: 1,
			SuppressedRevoked: 1, Since: t0},
		`{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",` +
			`"suppressed":12,"rate_limited":10,"dropped":2,"suppressed_deny":10,"suppressed_allow":1,` +
			`"suppressed_revoked":1,"since":"2026-11-27T03:00:00.123456789Z"}`,
	}, {
		Line{Time: t0, Pod: "web-5d9c", Namespace: "shop", Workload: "Deployment/web", Notice: NoticeAppNetRaw,
			Message: "containers hold CAP_NET_RAW", Containers: []string{"web", "debug"}},
		`{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",` +
			`"notice":"app-net-raw","message":"containers hold CAP_NET_RAW","containers":["web","debug"]}`,
	}} {
		b, err := json.Marshal(tc.line)
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal = %s, %v; want %s", b, err, tc.json)
		}
		var got Line
		if err := json.Unmarshal([]byte(tc.json), &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.line, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
			t.Errorf("decoded (-want +got):\n%s", diff)
		}
		if got.IsSummary() != (tc.line.Suppressed > 0) {
			t.Errorf("IsSummary = %v for %s", got.IsSummary(), tc.json)
		}
		if got.IsNotice() != (tc.line.Notice != "") {
			t.Errorf("IsNotice = %v for %s", got.IsNotice(), tc.json)
		}
	}
}
