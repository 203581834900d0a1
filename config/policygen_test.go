package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadPolicyGenServer(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(PolicyGenServer) bool
		err  string
	}{
		{"defaults", nil, nil, func(c PolicyGenServer) bool {
			return c.API.Addr == ":8443" && c.API.Audience == "podwall" && c.Generate.DNSService == "kube-system/kube-dns" &&
				c.Promote.LearnQuiet == 24*time.Hour && c.Learn.CollapseNamespace == 5 && c.LeaderElect && !c.NetworkPolicySync
		}, ""},
		{"collapse off", []string{"--learn-collapse-namespace=0"}, nil, func(c PolicyGenServer) bool { return c.Learn.CollapseNamespace == 0 }, ""},
		{"collapse from env", nil, map[string]string{"PODWALL_LEARN_COLLAPSE_NAMESPACE": "3"},
			func(c PolicyGenServer) bool { return c.Learn.CollapseNamespace == 3 }, ""},
		{"negative collapse", []string{"--learn-collapse-namespace=-1"}, nil, nil, "learn-collapse-namespace: -1 is negative"},
		{"networkpolicy sync from env", nil, map[string]string{"PODWALL_NETWORKPOLICY_SYNC": "true"},
			func(c PolicyGenServer) bool { return c.NetworkPolicySync }, ""},
		{"flag over env", []string{"--learn-quiet-period=1h"}, map[string]string{"PODWALL_LEARN_QUIET_PERIOD": "2h", "PODWALL_REPORT_BURST": "9"},
			func(c PolicyGenServer) bool { return c.Promote.LearnQuiet == time.Hour && c.API.ReportBurst == 9 }, ""},
		{"bad dns service", []string{"--dns-service=kube-dns"}, nil, nil, "dns-service"},
		{"bad max wait", []string{"--max-wait=1h"}, nil, nil, "max-wait"},
		{"negative quiet", []string{"--monitor-quiet-period=-1s"}, nil, nil, "quiet periods"},
		{"no certificate", []string{"--cert-mode=external", "--cert-dir="}, nil, nil, "cert-dir"},
		{"bad burst", nil, map[string]string{"PODWALL_REPORT_BURST": "0"}, nil, "report-burst"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := LoadPolicyGenServer(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one about %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

// FuzzPolicyGenServerFile: a file that loads writes back to one that loads to the same configuration.
func FuzzPolicyGenServerFile(f *testing.F) {
	seeds := []string{"max-wait: 30s\n", "dns-service: a/b\nreport-burst: 2\n", "learn-quiet-period: -1h\n", "learn-collapse-namespace: -2\n", "- x\n", "max-report-bytes: 1e9\n"}
	fuzzFile(f, seeds, LoadPolicyGenServer, PolicyGenServer.validate, func(c *PolicyGenServer) *string { return &c.File })
}
