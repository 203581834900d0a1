package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePlatform(t *testing.T) {
	const file = `
defaults: {mode: Monitor, fail-mode: closed, log-rate: 100, log-allow-interval: 30s}
namespaces:
  demo: {mode: protect, log-allows: all}
  shop: {deny-memo-timeout: 5s}
workloads:
  demo/Deployment/client: {fail-mode: open, log-burst: 500}
`
	p, err := ParsePlatform([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		namespace, workload string
		want                PlatformSettings
	}{
		{"other", "Deployment/web", PlatformSettings{"mode": "Monitor", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s"}},
		{"demo", "Deployment/web", PlatformSettings{"mode": "Protect", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all"}},
		{"demo", "Deployment/client", PlatformSettings{"mode": "Protect", "fail-mode": "open", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all", "log-burst": "500"}},
		{"demo", "", PlatformSettings{"mode": "Protect", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all"}},
		{"shop", "Deployment/client", PlatformSettings{"mode": "Monitor", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "deny-memo-timeout": "5s"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, p.For(tc.namespace, tc.workload)); diff != "" {
			t.Errorf("For(%s, %s) (-want +got):\n%s", tc.namespace, tc.workload, diff)
		}
	}
	if empty, err := ParsePlatform(nil); err != nil || len(empty.For("a", "Pod/b")) != 0 {
		t.Errorf("empty file: %v, %v", empty, err)
	}
}

func TestParsePlatformErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown field", "default: {mode: Protect}\n", []string{`unknown field "default"`}},
		{"not YAML", "defaults: {mode: [\n", []string{"platform.yaml"}},
		{"a key only the injector sets", "defaults: {policygen-ca: x}\n", []string{"defaults: policygen-ca: not a platform key"}},
		{"unknown key", "namespaces: {demo: {modes: Protect}}\n", []string{"namespaces.demo: modes: not a platform key"}},
		{"bad mode", "defaults: {mode: Enforce}\n", []string{`defaults: mode: "Enforce" is not one of`}},
		{"bad fail-mode", "workloads: {demo/Deployment/web: {fail-mode: ajar}}\n", []string{`workloads.demo/Deployment/web: fail-mode: "ajar" is not one of`}},
		{"bad rate", "defaults: {log-rate: fast}\n", []string{`defaults: log-rate: "fast"`}},
		{"zero rate", "defaults: {log-rate: 0}\n", []string{"defaults: log-rate: 0 is not a positive number"}},
		{"bad duration", "defaults: {deny-memo-timeout: 10ms}\n", []string{"defaults: deny-memo-timeout: 10ms is under the 100ms minimum"}},
		{"a list", "defaults: {mode: [Protect]}\n", []string{"defaults: mode: want a single value"}},
		{"bad namespace", "namespaces: {Demo_1: {mode: Protect}}\n", []string{`namespaces: "Demo_1" is not a namespace name`}},
		{"bad workload", "workloads: {demo/client: {mode: Protect}}\n", []string{`workloads: "demo/client" is not namespace/Kind/name`}},
		{"every problem at once", "defaults: {mode: x}\nnamespaces: {demo: {log-burst: 0}}\n", []string{"defaults: mode", "namespaces.demo: log-burst"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePlatform([]byte(tc.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// FuzzPlatformFile feeds arbitrary platform files to ParsePlatform. It must never panic, and what it
// accepts must be settings the sidecar takes: each pod's resolved settings, as its environment, load
// and validate.
func FuzzPlatformFile(f *testing.F) {
	for _, seed := range []string{
		"defaults: {mode: Monitor, fail-mode: closed, log-rate: 100}\nnamespaces: {demo: {mode: Protect}}\nworkloads: {demo/Deployment/client: {fail-mode: open}}\n",
		"defaults: {log-allow-interval: 1h, log-burst: 1, deny-memo-timeout: 100ms, log-allows: none}\n",
		"defaults: {log-rate: 1e308}\n",
		"defaults: {log-rate: .nan}\n",
		"workloads: {a/B/c: {}}\n",
		"defaults: {mode: [x]}\n",
		"&a [*a]",
		"defaults: !!binary aGVsbG8=\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePlatform(data)
		if err != nil {
			return
		}
		check := func(ns, w string) {
			var args []string
			for k, v := range p.For(ns, w) {
				args = append(args, "--"+k+"="+v)
			}
			if _, err := loadPlatform(append(args, "--config=", "--policy-file=/p")); err != nil {
				t.Fatalf("accepted settings the sidecar refuses: %v", err)
			}
		}
		check("none", "")
		for ns := range p.Namespaces {
			check(ns, "")
		}
		for w := range p.Workloads {
			ns, kn, _ := strings.Cut(w, "/")
			check(ns, kn)
		}
	})
}
