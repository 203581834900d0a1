package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
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
				c.Promote.LearnQuiet == 24*time.Hour && c.LeaderElect
		}, ""},
		{"flag over env", []string{"--learn-quiet-period=1h"}, map[string]string{"PODWALL_LEARN_QUIET_PERIOD": "2h", "PODWALL_REPORT_BURST": "9"},
			func(c PolicyGenServer) bool { return c.Promote.LearnQuiet == time.Hour && c.API.ReportBurst == 9 }, ""},
		{"bad dns service", []string{"--dns-service=kube-dns"}, nil, nil, "dns-service"},
		{"bad max wait", []string{"--max-wait=1h"}, nil, nil, "max-wait"},
		{"negative quiet", []string{"--monitor-quiet-period=-1s"}, nil, nil, "quiet periods"},
		{"no certificate", []string{"--tls-cert-file="}, nil, nil, "tls-cert-file"},
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

// TestPolicyGenServerKeysAreFlags: every field is a flag and every flag a field.
func TestPolicyGenServerKeysAreFlags(t *testing.T) {
	var fields []string
	for key := range settingsByKey(PolicyGenServer{}) {
		fields = append(fields, key)
	}
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.String(fileKey, "", "")
	policyGenServerLoader.flags(flags)
	var names []string
	flags.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	slices.Sort(fields)
	slices.Sort(names)
	if diff := cmp.Diff(names, fields); diff != "" {
		t.Errorf("flags (-) and struct keys (+) differ:\n%s", diff)
	}
}

// FuzzPolicyGenServerFile: a file that loads writes back to one that loads to the same configuration.
func FuzzPolicyGenServerFile(f *testing.F) {
	for _, seed := range []string{"max-wait: 30s\n", "dns-service: a/b\nreport-burst: 2\n", "learn-quiet-period: -1h\n", "- x\n", "max-report-bytes: 1e9\n"} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	path, again := filepath.Join(dir, "c.yaml"), filepath.Join(dir, "again.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadPolicyGenServer([]string{"--config", path})
		if err != nil {
			return
		}
		settings := settingsByKey(got)
		delete(settings, fileKey)
		out, err := yaml.Marshal(settings)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(again, out, 0o600); err != nil {
			t.Fatal(err)
		}
		reloaded, err := LoadPolicyGenServer([]string{"--config", again})
		if err != nil {
			t.Fatalf("config written back does not load: %v\n%s", err, out)
		}
		reloaded.File = path
		if diff := cmp.Diff(got, reloaded); diff != "" {
			t.Fatalf("config changed on the way back:\n%s", diff)
		}
	})
}
