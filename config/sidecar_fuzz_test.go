package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/policy"
)

// FuzzSidecarFile feeds arbitrary workload files to applyWorkloadFile over a platform with a Monitor
// floor. It must never panic; a file it accepts must leave a valid configuration that is nowhere
// looser than the platform's and differs from it only in the workload's keys, and writing those keys
// back out as a file must give the same configuration, so that no value is silently changed on the
// way in.
func FuzzSidecarFile(f *testing.F) {
	for _, seed := range []string{
		"mode: protect\nlog-allows: all\nlog-allow-interval: 30s\nlog-rate: 500\nlog-burst: 900\n",
		"queue-count: 2\n",
		"mode: Learn\nfail-mode: open\n",
		"policygen-ca: x\n",
		"log-rate: .nan\n",
		"log-rate: 1e308\nlog-burst: 9223372036854775807\n",
		"log:\n  rate: 1\n",
		"config: /x\n",
		"- a\n",
		"mode: [\n",
		"mode: !!binary aGVsbG8=\n",
		"&a [*a]",
		"# nothing\n",
	} {
		f.Add([]byte(seed))
	}
	platform, err := loadPlatform([]string{"--policy-file=/p", "--mode=Monitor", "--queue-count=1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := applyWorkloadFile(platform, "config.yaml", data)
		if err != nil {
			return
		}
		if err := got.validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		var p problems
		got.Live.tightens(platform.Live, &p)
		if len(p) > 0 || got.Live.Mode == "" {
			t.Fatalf("accepted a looser config: %v (mode %q)", p, got.Live.Mode)
		}
		rest := got
		rest.Live, rest.Queue.Count, rest.FileState = platform.Live, platform.Queue.Count, platform.FileState
		if diff := cmp.Diff(platform, rest, sameConfig); diff != "" {
			t.Fatalf("the file changed a platform key (-platform +got):\n%s", diff)
		}
		keys := settingsByKey(got.Live)
		keys["queue-count"] = got.Queue.Count
		out, err := yaml.Marshal(keys)
		if err != nil {
			t.Fatalf("write accepted config: %v", err)
		}
		again, err := applyWorkloadFile(platform, "config.yaml", out)
		if err != nil {
			t.Fatalf("config written back is refused: %v\n%s", err, out)
		}
		if want := (FileState{State: policy.ConfigApplied}); got.FileState != want && got.FileState.State != policy.ConfigNone {
			t.Fatalf("file state %+v", got.FileState)
		}
		again.FileState = got.FileState
		if diff := cmp.Diff(got, again, sameConfig); diff != "" {
			t.Fatalf("config changed on the way back (-first +second):\n%s\nfile:\n%s", diff, out)
		}
	})
}
