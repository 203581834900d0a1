package policy

import (
	"strings"
	"testing"
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
