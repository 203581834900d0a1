package config

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"podwall.io/podwall/api/policy"
)

// TestWorkloadFile covers the workload layer: what the pod's ConfigMap may set over the platform's
// flags and environment, and that anything else refuses the whole file, leaving the platform's
// settings alone in force.
func TestWorkloadFile(t *testing.T) {
	// The platform in most cases: mode floor Monitor, the default log settings.
	platform := map[string]string{"PODWALL_MODE": "Monitor"}
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		// applied changes the platform's settings as the file should; nil means the file is refused.
		applied func(s *Sidecar)
		// refused are parts of the refusal, above all the offending keys.
		refused []string
	}{{
		name: "a stricter mode and more logging",
		file: "mode: Protect\nlog-allows: all\nlog-allow-interval: 10s\nlog-rate: 1000\nlog-burst: 2000\n",
		env:  platform,
		applied: func(s *Sidecar) {
			s.Live = SidecarLive{Mode: policy.Protect, Log: VerdictLog{LogAllAllows, 10 * time.Second, 1000, 2000}}
		},
	}, {
		name:    "the platform's own values",
		file:    "mode: monitor\nlog-allows: first\nlog-allow-interval: 1m\nlog-rate: 100\nlog-burst: 200\n",
		env:     platform,
		applied: func(s *Sidecar) {},
	}, {
		name:    "any mode without a platform mode: the policy's mode is the floor then",
		file:    "mode: Learn\n",
		applied: func(s *Sidecar) { s.Live.Mode = policy.Learn },
	}, {
		name:    "queue-count tunes throughput",
		file:    "queue-count: 3\n",
		env:     platform,
		applied: func(s *Sidecar) { s.Queue.Count = 3 },
	}, {
		name:    "the attack: Learn and fail open",
		file:    "mode: Learn\nfail-mode: open\n",
		env:     map[string]string{"PODWALL_MODE": "Protect"},
		refused: []string{`key "fail-mode": ` + PlatformOnly},
	}, {
		name:    "a weaker mode",
		file:    "mode: Learn\n",
		env:     platform,
		refused: []string{"mode: Learn is weaker than the platform's Monitor; " + PlatformOnly},
	}, {
		name:    "fewer allows logged",
		file:    "log-allows: none\n",
		env:     platform,
		refused: []string{"log-allows: none logs fewer allows than the platform's first; " + PlatformOnly},
	}, {
		name:    "a longer allow interval",
		file:    "log-allow-interval: 2m\n",
		refused: []string{"log-allow-interval: 2m0s is longer than the platform's 1m0s"},
	}, {
		name:    "deny lines silenced by the rate",
		file:    "log-rate: 0.5\nlog-burst: 1\n",
		refused: []string{"log-rate: 0.5 is under the platform's 100", "log-burst: 1 is under the platform's 200"},
	}, {
		name:    "under a floor set by a flag",
		file:    "log-rate: 50\n",
		args:    []string{"--log-rate=60"},
		refused: []string{"log-rate: 50 is under the platform's 60"},
	}, {
		name:    "unknown keys",
		file:    "modee: Protect\nlograte: 1\n",
		refused: []string{`unknown key "lograte", "modee"`},
	}, {
		name:    "nested key",
		file:    "log:\n  rate: 1\n",
		refused: []string{`unknown key "log.rate"`},
	}, {
		name:    "the file names another file",
		file:    "config: /etc/other.yaml\n",
		refused: []string{`key "config": ` + PlatformOnly},
	}, {
		name:    "platform keys and unknown keys at once, each named",
		file:    "policygen-ca: x\nlisten-addr: :1\nbogus: 1\n",
		refused: []string{`unknown key "bogus"`, `key "listen-addr", "policygen-ca": ` + PlatformOnly},
	}, {
		name:    "not YAML",
		file:    "mode: [Protect\n",
		refused: []string{"config file"},
	}, {
		name:    "not a mapping",
		file:    "- mode\n",
		refused: []string{"config file"},
	}, {
		name:    "mode",
		file:    "mode: Enforce\n",
		refused: []string{`mode: "Enforce" is not one of "", "Learn"`},
	}, {
		name:    "log-allow-interval too short",
		file:    "log-allow-interval: 5\n",
		refused: []string{"log-allow-interval: 5ns"},
	}, {
		name:    "log-rate NaN",
		file:    "log-rate: .nan\n",
		refused: []string{"log-rate: NaN"},
	}, {
		name:    "log-rate infinite",
		file:    "log-rate: .inf\n",
		refused: []string{"log-rate: +Inf"},
	}, {
		name:    "queue-count bool",
		file:    "queue-count: true\n",
		refused: []string{"queue-count"},
	}, {
		name:    "queue-count too big",
		file:    "queue-count: 70000\n",
		refused: []string{"queue-count", "70000 does not fit"},
	}, {
		name:    "queue range",
		file:    "queue-count: 65500\n",
		refused: []string{"queue-count: queues 100 to 65600 (the last for DNS)"},
	}, {
		name:    "file too large",
		file:    "# " + strings.Repeat("x", maxFileSize) + "\n",
		refused: []string{"larger than the 1048576-byte limit"},
	}, {
		name:    "file is a device",
		args:    []string{"--config=/dev/zero"},
		refused: []string{"larger than the 1048576-byte limit"},
	}, {
		name:    "file is a directory",
		args:    []string{"--config=" + os.TempDir()},
		refused: []string{"read config file"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, args := writeSources(t, tc.file, tc.env, append([]string{"--config=$FILE", "--policy-file=/p"}, tc.args...))
			got, err := LoadSidecar(args)
			if err != nil {
				t.Fatalf("LoadSidecar: %v (a workload file must not fail the load)", err)
			}
			want := defaultSidecar(path)
			want.File, want.PolicyFile = got.File, "/p"
			want.Platform.Mode = policy.Mode(tc.env["PODWALL_MODE"])
			if len(tc.args) > 0 && tc.args[0] == "--log-rate=60" {
				want.Platform.Log.Rate = 60
			}
			want.Live = want.Platform
			if tc.applied != nil {
				tc.applied(&want)
				want.FileState = FileState{State: policy.ConfigApplied}
				if diff := cmp.Diff(want, got, sameConfig); diff != "" {
					t.Errorf("config (-want +got):\n%s", diff)
				}
				return
			}
			if got.FileState.State != policy.ConfigRefused {
				t.Fatalf("file state %+v, want refused", got.FileState)
			}
			for _, w := range tc.refused {
				if !strings.Contains(got.FileState.Refused, w) {
					t.Errorf("refusal %q does not contain %q", got.FileState.Refused, w)
				}
			}
			want.FileState = got.FileState
			if diff := cmp.Diff(want, got, sameConfig); diff != "" {
				t.Errorf("a refused file must leave the platform's settings alone (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWorkloadFilePlatformKeys refuses, one by one, every key but the workload's, each with the
// message that says where it belongs.
func TestWorkloadFilePlatformKeys(t *testing.T) {
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	sidecarLoader.flags(flags)
	flags.VisitAll(func(f *pflag.Flag) {
		if slices.Contains(workloadKeys, f.Name) {
			return
		}
		t.Run(f.Name, func(t *testing.T) {
			path, args := writeSources(t, f.Name+": "+strings.Trim(f.DefValue, "[]")+"\n", nil, []string{"--config=$FILE", "--policy-file=/p"})
			got, err := LoadSidecar(args)
			if err != nil {
				t.Fatal(err)
			}
			want := `config file ` + path + `: key "` + f.Name + `": ` + PlatformOnly
			if got.FileState.State != policy.ConfigRefused || got.FileState.Refused != want {
				t.Errorf("file state %+v, want refused: %s", got.FileState, want)
			}
		})
	})
}
