package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// FuzzSidecarFile feeds arbitrary config files to LoadSidecar. It must never panic; a file it accepts
// must validate, and writing the accepted config back out as a file must load the same config, so
// that no value is silently changed on the way in.
func FuzzSidecarFile(f *testing.F) {
	for _, seed := range []string{
		"policy-file: /p\n",
		"policygen-url: https://policygen.podwall-system.svc:8443\npod-ips: [10.0.0.1, \"fd00::1\"]\n",
		"policy-file: /p\nmode: protect\nlog-allows: all\nlog-allow-interval: 90s\nlog-rate: 0.5\nlog-burst: 1\n",
		"policy-file: /p\nmesh-outbound-ports: [15001]\nmesh-inbound-ports: \"15006,4143\"\nqueue-base: 65534\nqueue-count: 2\n",
		"policy-file: /p\nfail-mode: open\nlisten-addr: 127.0.0.1:9\nworkload: Deployment/web\npod-name: web-1\n",
		"policy-file: /p\nqueue-base: 70000\n",
		"policy-file: /p\nlog-rate: .nan\n",
		"policy-file: /p\nlog:\n  rate: 1\n",
		"config: /x\n",
		"- a\n",
		"policy-file: /p\nmode: [\n",
		"policy-file: !!binary aGVsbG8=\n",
		"&a [*a]",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "config.yaml")
	again := filepath.Join(dir, "again.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadSidecar([]string{"--config", path})
		if err != nil {
			return
		}
		if err := got.validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		settings := settingsByKey(got)
		delete(settings, fileKey)
		out, err := yaml.Marshal(settings)
		if err != nil {
			t.Fatalf("write accepted config: %v", err)
		}
		if err := os.WriteFile(again, out, 0o600); err != nil {
			t.Fatal(err)
		}
		reloaded, err := LoadSidecar([]string{"--config", again})
		if err != nil {
			t.Fatalf("config written back does not load: %v\n%s", err, out)
		}
		reloaded.File = path
		if diff := cmp.Diff(got, reloaded, sameConfig); diff != "" {
			t.Fatalf("config changed on the way back (-first +second):\n%s\nfile:\n%s", diff, out)
		}
	})
}
