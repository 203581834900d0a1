package config

import "testing"

// FuzzSidecarFile feeds arbitrary config files to LoadSidecar. It must never panic; a file it accepts
// must validate, and writing the accepted config back out as a file must load the same config, so
// that no value is silently changed on the way in.
func FuzzSidecarFile(f *testing.F) {
	seeds := []string{
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
	}
	fuzzFile(f, seeds, LoadSidecar, Sidecar.validate, func(s *Sidecar) *string { return &s.File }, sameConfig)
}
