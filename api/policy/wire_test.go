package policy

import (
	"strings"
	"testing"
	"time"
)

func TestSidecarVersion(t *testing.T) {
	for _, tc := range []struct {
		header, want string
		bad          bool
	}{
		{header: "", want: UnknownVersion},
		{header: "v0.3.0", want: "v0.3.0"},
		{header: "v0.3.0-12-gabcdef0-dirty", want: "v0.3.0-12-gabcdef0-dirty"},
		{header: "1.2.3+build_7", want: "1.2.3+build_7"},
		{header: strings.Repeat("a", MaxVersion), want: strings.Repeat("a", MaxVersion)},
		{header: strings.Repeat("a", MaxVersion+1), bad: true},
		{header: "v1 <script>", bad: true},
		{header: "v1/../x", bad: true},
		{header: "vé", bad: true},
	} {
		got, err := SidecarVersion(tc.header)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("SidecarVersion(%q) = %q, %v; want %q, error %v", tc.header, got, err, tc.want, tc.bad)
		}
	}
}

func TestGuard(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   Guard
		bad    bool
	}{
		{header: "", want: Guard{}},
		{header: "fail=closed", want: Guard{}},
		{header: "fail=open", want: Guard{FailOpen: true}},
		{header: "fail=closed; tampered=2026-12-02T01:30:00Z", want: Guard{Tampered: at}},
		{header: "fail=open;tampered=2026-12-02T02:30:00+01:00; later=1", want: Guard{FailOpen: true, Tampered: at}},
		{header: "tampered=2026-12-02T01:30:00Z", bad: true},
		{header: "fail=maybe", bad: true},
		{header: "fail=open; fail=closed", bad: true},
		{header: "fail=closed; tampered=yesterday", bad: true},
		{header: "fail", bad: true},
	} {
		got, err := ParseGuard(tc.header)
		if (err != nil) != tc.bad || !got.Tampered.Equal(tc.want.Tampered) || got.FailOpen != tc.want.FailOpen {
			t.Errorf("ParseGuard(%q) = %+v, %v; want %+v, error %v", tc.header, got, err, tc.want, tc.bad)
		}
		if err == nil {
			if again, err := ParseGuard(got.String()); err != nil || again.FailOpen != got.FailOpen || !again.Tampered.Equal(got.Tampered) {
				t.Errorf("ParseGuard(%q.String() = %q) = %+v, %v", tc.header, got.String(), again, err)
			}
		}
	}
}
