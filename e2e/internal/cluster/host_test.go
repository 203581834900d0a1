package cluster

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitRule(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{`-A INPUT -j KUBE-FIREWALL`, []string{"-A", "INPUT", "-j", "KUBE-FIREWALL"}},
		{`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			[]string{"-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
		{`-A X -m comment --comment "a \"quoted\" word" -j KUBE-Y`, []string{"-A", "X", "-m", "comment", "--comment", `a "quoted" word`, "-j", "KUBE-Y"}},
		{`-A X -m comment --comment "" -j KUBE-Y`, []string{"-A", "X", "-m", "comment", "--comment", "", "-j", "KUBE-Y"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, splitRule(tt.line)); diff != "" {
			t.Errorf("splitRule(%q) (-want +got):\n%s", tt.line, diff)
		}
	}
}
