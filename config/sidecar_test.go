package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/pflag"

	"podwall.io/podwall/api/policy"
)

// sameConfig compares configs: netip.Addr by value, an empty list as no list.
var sameConfig = cmp.Options{cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})}

// defaultSidecar is the configuration with every default, read from file.
func defaultSidecar(file string) Sidecar {
	return Sidecar{
		File: file,
		Live: SidecarLive{Log: VerdictLog{Allows: LogFirstAllow, AllowInterval: time.Minute, Rate: 100, Burst: 200}},
		Mesh: MeshPorts{Outbound: []uint16{15001, 4140}, Inbound: []uint16{15006, 4143}},
		Queue: Queues{
			Base:  100,
			Count: uint16(min(runtime.GOMAXPROCS(0), 4)),
		},
		Workers:         VerdictWorkers{Min: 1, Max: autoMaxWorkers(sidecarCPUs())},
		Platform:        SidecarLive{Log: VerdictLog{Allows: LogFirstAllow, AllowInterval: time.Minute, Rate: 100, Burst: 200}},
		FileState:       FileState{State: policy.ConfigNone},
		FailMode:        FailClosed,
		DenyMemoTimeout: 2 * time.Second,
		DNS:             DNS{ResolvConf: "/etc/resolv.conf", MinTTL: 5 * time.Second, MaxTTL: time.Hour, MaxNames: 4096, MaxAddrs: 16384},
		CacheDir:        "/var/lib/podwall",
		ListenAddr:      ":9947",
		PolicyGen:       PolicyGen{TokenFile: "/var/run/secrets/podwall.io/token"},
	}
}

// writeSources writes content (if not empty) as the config file of a fresh directory, sets env with $FILE
// standing for the file's path, and returns the path and args with $FILE replaced.
func writeSources(t *testing.T, content string, env map[string]string, args []string) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if content != "" {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range env {
		t.Setenv(k, strings.ReplaceAll(v, "$FILE", path))
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "$FILE", path)
	}
	return path, out
}

func TestLoadSidecarPrecedence(t *testing.T) {
	const file = `
mode: Monitor
log-rate: 500
log-allow-interval: 30s
queue-count: 3
`
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want func(s *Sidecar)
	}{{
		name: "defaults without a file",
		args: []string{"--config=$FILE", "--policy-file=/p"},
		want: func(s *Sidecar) { s.PolicyFile = "/p" },
	}, {
		name: "file over defaults",
		file: file,
		args: []string{"--config=$FILE", "--policy-file=/p"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.Rate, s.Live.Log.AllowInterval = policy.Monitor, 500, 30*time.Second
			s.Queue.Count, s.PolicyFile, s.FileState = 3, "/p", FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "env over defaults",
		env: map[string]string{"PODWALL_MODE": "Protect", "PODWALL_MESH_OUTBOUND_PORTS": "4140, 15001",
			"PODWALL_LOG_ALLOW_INTERVAL": "10s", "PODWALL_QUEUE_BASE": "300", "PODWALL_POLICY_FILE": "/p"},
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.AllowInterval = policy.Protect, 10*time.Second
			s.Platform = s.Live
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{4140, 15001}, 300, "/p"
		},
	}, {
		name: "flags over env",
		env: map[string]string{"PODWALL_MODE": "Protect", "PODWALL_MESH_OUTBOUND_PORTS": "4140",
			"PODWALL_LOG_ALLOW_INTERVAL": "10s", "PODWALL_QUEUE_BASE": "300", "PODWALL_POLICY_FILE": "/p"},
		args: []string{"--config=$FILE", "--mode=Learn", "--mesh-outbound-ports=1,2", "--queue-base=400"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.AllowInterval = policy.Learn, 10*time.Second
			s.Platform = s.Live
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{1, 2}, 400, "/p"
		},
	}, {
		name: "verdict workers from env and flags",
		env:  map[string]string{"PODWALL_VERDICT_MIN_WORKERS": "2", "PODWALL_VERDICT_MAX_WORKERS": "3", "PODWALL_POLICY_FILE": "/p"},
		args: []string{"--config=$FILE", "--verdict-max-workers=6"},
		want: func(s *Sidecar) { s.Workers, s.PolicyFile = VerdictWorkers{Min: 2, Max: 6}, "/p" },
	}, {
		name: "verdict-max-workers 0 is never under the minimum",
		args: []string{"--config=$FILE", "--policy-file=/p", "--verdict-min-workers=20"},
		want: func(s *Sidecar) { s.Workers, s.PolicyFile = VerdictWorkers{Min: 20, Max: 20}, "/p" },
	}, {
		name: "the file tightens what env and flags set",
		file: "mode: Protect\nlog-rate: 500\nlog-allows: all\n",
		env:  map[string]string{"PODWALL_MODE": "Monitor", "PODWALL_LOG_RATE": "50"},
		args: []string{"--config=$FILE", "--policy-file=/p", "--log-allow-interval=10s"},
		want: func(s *Sidecar) {
			s.Platform.Mode, s.Platform.Log.Rate, s.Platform.Log.AllowInterval = policy.Monitor, 50, 10*time.Second
			s.Live = s.Platform
			s.Live.Mode, s.Live.Log.Rate, s.Live.Log.Allows = policy.Protect, 500, LogAllAllows
			s.PolicyFile, s.FileState = "/p", FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "an explicitly empty flag still wins",
		env:  map[string]string{"PODWALL_MODE": "Protect"},
		args: []string{"--config=$FILE", "--mode=", "--policy-file=/p"},
		want: func(s *Sidecar) { s.PolicyFile = "/p" },
	}, {
		name: "an empty env variable counts as unset",
		file: "mode: Monitor\n",
		env:  map[string]string{"PODWALL_MODE": ""},
		args: []string{"--config=$FILE", "--policy-file=/p"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.PolicyFile, s.FileState = policy.Monitor, "/p", FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "file named by env",
		file: "log-allows: all\n",
		env:  map[string]string{"PODWALL_CONFIG": "$FILE"},
		args: []string{"--policy-file=/p"},
		want: func(s *Sidecar) {
			s.Live.Log.Allows, s.PolicyFile, s.FileState = LogAllAllows, "/p", FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "file named by flag over env",
		file: "log-allows: all\n",
		env:  map[string]string{"PODWALL_CONFIG": "/nonexistent/config.yaml"},
		args: []string{"--config", "$FILE", "--policy-file=/p"},
		want: func(s *Sidecar) {
			s.Live.Log.Allows, s.PolicyFile, s.FileState = LogAllAllows, "/p", FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "an empty file is no file",
		file: "# nothing\n",
		args: []string{"--config=$FILE", "--policy-file=/p"},
		want: func(s *Sidecar) { s.PolicyFile = "/p" },
	}, {
		name: "mode in any letter case, lists in flags",
		file: "mode: protect\n",
		args: []string{"--config=$FILE", "--policy-file=/p", "--mesh-inbound-ports=15006", "--pod-ips=10.0.0.7"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Mesh.Inbound, s.PolicyFile = policy.Protect, []uint16{15006}, "/p"
			s.Pod.IPs, s.FileState = []netip.Addr{netip.MustParseAddr("10.0.0.7")}, FileState{State: policy.ConfigApplied}
		},
	}, {
		name: "pod identity from the downward API env",
		env: map[string]string{"PODWALL_POD_NAME": "web-7d9f-x2x", "PODWALL_POD_NAMESPACE": "shop",
			"PODWALL_POD_IPS": "10.1.2.3,fd00::3", "PODWALL_POD_SERVICE_ACCOUNT": "web",
			"PODWALL_WORKLOAD": "Deployment/web", "PODWALL_POLICYGEN_URL": "https://policygen.podwall-system.svc:8443",
			"PODWALL_QUEUE_COUNT": "8"},
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) {
			s.Pod = Pod{Name: "web-7d9f-x2x", Namespace: "shop", ServiceAccount: "web", Workload: "Deployment/web",
				IPs: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3")}}
			s.PolicyGen.URL, s.Queue.Count = "https://policygen.podwall-system.svc:8443", 8
		},
	}, {
		name: "app containers keeping NET_RAW, from the injector's env",
		env:  map[string]string{"PODWALL_APP_NET_RAW": "web,debug", "PODWALL_POLICY_FILE": "/p"},
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) { s.AppNetRaw, s.PolicyFile = []string{"web", "debug"}, "/p" },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, args := writeSources(t, tc.file, tc.env, tc.args)
			got, err := LoadSidecar(args)
			if err != nil {
				t.Fatalf("LoadSidecar: %v", err)
			}
			want := defaultSidecar(path)
			tc.want(&want)
			if diff := cmp.Diff(want, got, sameConfig); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadSidecarErrors covers the platform layer: flags and environment that do not load or validate
// fail the load, naming each key. (What the workload's file gets wrong is a refusal: TestWorkloadFile.)
func TestLoadSidecarErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		// want are parts of the error, above all the offending keys.
		want []string
	}{
		{name: "mode", env: map[string]string{"PODWALL_MODE": "Enforce"}, want: []string{`mode: "Enforce" is not one of "", "Learn"`}},
		{name: "log-allows", args: []string{"--log-allows=some"}, want: []string{"log-allows:"}},
		{name: "log-allow-interval too short", args: []string{"--log-allow-interval=5ns"}, want: []string{"log-allow-interval: 5ns"}},
		{name: "log-allow-interval not a duration", env: map[string]string{"PODWALL_LOG_ALLOW_INTERVAL": "soon"}, want: []string{"log-allow-interval"}},
		{name: "log-rate zero", args: []string{"--log-rate=0"}, want: []string{"log-rate: 0"}},
		{name: "log-rate NaN", env: map[string]string{"PODWALL_LOG_RATE": "NaN"}, want: []string{"log-rate: NaN"}},
		{name: "log-rate infinite", env: map[string]string{"PODWALL_LOG_RATE": "+Inf"}, want: []string{"log-rate: +Inf"}},
		{name: "log-burst", env: map[string]string{"PODWALL_LOG_BURST": "0"}, want: []string{"log-burst: 0"}},
		{name: "log-burst not a number", env: map[string]string{"PODWALL_LOG_BURST": "lots"}, want: []string{"log-burst"}},
		{name: "port zero", args: []string{"--mesh-outbound-ports=0"}, want: []string{"mesh-outbound-ports: 0 is not a port"}},
		{name: "port wraps from env", env: map[string]string{"PODWALL_MESH_INBOUND_PORTS": "65536"}, want: []string{"mesh-inbound-ports[0]"}},
		{name: "port twice", args: []string{"--mesh-inbound-ports=15001"}, want: []string{"mesh-inbound-ports: port 15001 is listed twice (also in mesh-outbound-ports)"}},
		{name: "queue range", args: []string{"--queue-base=65535", "--queue-count=2"}, want: []string{"queue-count: queues 65535 to 65537 (the last for DNS)"}},
		{name: "queue-base negative", env: map[string]string{"PODWALL_QUEUE_BASE": "-1"}, want: []string{"queue-base"}},
		{name: "queue-count bool", env: map[string]string{"PODWALL_QUEUE_COUNT": "true"}, want: []string{"queue-count"}},
		{name: "verdict-min-workers", env: map[string]string{"PODWALL_VERDICT_MIN_WORKERS": "0"}, want: []string{"verdict-min-workers: 0 is under the minimum of 1"}},
		{name: "verdict-max-workers under the minimum", args: []string{"--verdict-min-workers=4", "--verdict-max-workers=2"}, want: []string{"verdict-max-workers: 2 is under verdict-min-workers (4)"}},
		{name: "verdict-max-workers too many", env: map[string]string{"PODWALL_VERDICT_MAX_WORKERS": "1000"}, want: []string{"verdict-max-workers: 1000 is over the maximum of 64"}},
		{name: "verdict-max-workers not a number", env: map[string]string{"PODWALL_VERDICT_MAX_WORKERS": "auto"}, want: []string{"verdict-max-workers"}},
		{name: "deny-memo-timeout", env: map[string]string{"PODWALL_DENY_MEMO_TIMEOUT": "10ms"}, want: []string{"deny-memo-timeout: 10ms is under the 100ms minimum"}},
		{name: "dns-min-ttl", args: []string{"--dns-min-ttl=500ms"}, want: []string{"dns-min-ttl: 500ms is under the 1s minimum"}},
		{name: "dns-max-ttl under dns-min-ttl", env: map[string]string{"PODWALL_DNS_MIN_TTL": "1m", "PODWALL_DNS_MAX_TTL": "30s"}, want: []string{"dns-max-ttl: 30s is under dns-min-ttl (1m0s)"}},
		{name: "dns-max-names", args: []string{"--dns-max-names=0"}, want: []string{"dns-max-names: 0 is under the minimum of 1"}},
		{name: "dns-max-addrs", env: map[string]string{"PODWALL_DNS_MAX_ADDRS": "-5"}, want: []string{"dns-max-addrs: -5 is under the minimum of 1"}},
		{name: "fail-mode", env: map[string]string{"PODWALL_FAIL_MODE": "half"}, want: []string{`fail-mode: "half" is not one of "closed", "open"`}},
		{name: "no policy source", args: []string{"--policy-file="}, want: []string{"policy-file: set policy-file (standalone) or policygen-url"}},
		{name: "two policy sources", args: []string{"--policygen-url=https://pg"}, want: []string{"policygen-url: set policy-file or policygen-url, not both"}},
		{name: "policygen over http", args: []string{"--policy-file=", "--policygen-url=http://pg:80"}, want: []string{"policygen-url: \"http://pg:80\" is not an https URL"}},
		{name: "policygen without token", args: []string{"--policy-file=", "--policygen-url=https://pg", "--policygen-token-file="}, want: []string{"policygen-token-file: required"}},
		{name: "listen-addr without port", args: []string{"--listen-addr=9947"}, want: []string{"listen-addr: \"9947\" is not host:port"}},
		{name: "listen-addr port zero", args: []string{"--listen-addr=:0"}, want: []string{"listen-addr: \"0\" is not a port"}},
		{name: "listen-addr on a mesh port", args: []string{"--listen-addr=127.0.0.1:15006"}, want: []string{"listen-addr: port 15006 is a mesh proxy port"}},
		{name: "pod-name", env: map[string]string{"PODWALL_POD_NAME": "Web_1"}, want: []string{"pod-name:"}},
		{name: "pod-namespace", env: map[string]string{"PODWALL_POD_NAMESPACE": "a.b"}, want: []string{"pod-namespace:"}},
		{name: "pod-service-account", env: map[string]string{"PODWALL_POD_SERVICE_ACCOUNT": "-sa"}, want: []string{"pod-service-account:"}},
		{name: "pod-ips", env: map[string]string{"PODWALL_POD_IPS": "10.0.0.1,bogus"}, want: []string{"pod-ips[1]"}},
		{name: "pod-ips with zone", args: []string{"--pod-ips=fe80::1%eth0"}, want: []string{"pod-ips"}},
		{name: "workload", env: map[string]string{"PODWALL_WORKLOAD": "web"}, want: []string{`workload: "web" is not Kind/name`}},
		{name: "every problem at once", env: map[string]string{"PODWALL_MODE": "x", "PODWALL_FAIL_MODE": "y", "PODWALL_LOG_BURST": "0"}, want: []string{"mode:", "fail-mode:", "log-burst:"}},
		{name: "unknown flag", args: []string{"--modes=Protect"}, want: []string{"unknown flag: --modes"}},
		{name: "positional argument", args: []string{"Protect"}, want: []string{`unexpected argument "Protect"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, args := writeSources(t, "", tc.env, append([]string{"--config=$FILE", "--policy-file=/p"}, tc.args...))
			got, err := LoadSidecar(args)
			if err == nil {
				t.Fatalf("LoadSidecar accepted the config: %+v", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if diff := cmp.Diff(Sidecar{}, got, sameConfig); diff != "" {
				t.Errorf("a failed load returned a config:\n%s", diff)
			}
		})
	}
}

func TestLoadSidecarHelp(t *testing.T) {
	if _, err := LoadSidecar([]string{"--help"}); !errors.Is(err, ErrHelp) {
		t.Errorf("LoadSidecar(--help) = %v, want ErrHelp", err)
	}
}

// TestLoadVersion: every binary's --version stops loading with ErrVersion before any setting is
// judged (an invalid one beside it does not matter), and "version" is no setting: neither a key of the
// config file (the sidecar's workload file is refused for it) nor read from the environment.
func TestLoadVersion(t *testing.T) {
	tests := []struct {
		name string
		bad  string // an invalid setting of this binary
		load func([]string) error
	}{
		{"sidecar", "--log-allows=bogus", func(a []string) error {
			s, err := LoadSidecar(append(a, "--policy-file=/policy.json"))
			if err == nil && s.FileState.Refused != "" {
				err = errors.New(s.FileState.Refused)
			}
			return err
		}},
		{"injector", "--port=0", func(a []string) error { _, err := LoadInjector(a); return err }},
		{"policygen", "--cert-mode=bogus", func(a []string) error { _, err := LoadPolicyGenServer(a); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.load([]string{tc.bad, "--version"}); !errors.Is(err, ErrVersion) {
				t.Errorf("--version = %v, want ErrVersion", err)
			}
			file := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(file, []byte("version: true\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := tc.load([]string{"--config=" + file}); err == nil || !strings.Contains(err.Error(), `"version"`) {
				t.Errorf("version in the file = %v, want it refused", err)
			}
			t.Setenv("PODWALL_VERSION", "true")
			if err := tc.load(nil); errors.Is(err, ErrVersion) {
				t.Errorf("PODWALL_VERSION printed the version: %v", err)
			}
		})
	}
}

// TestSidecarKeysAreFlags guards the one-registry rule: every field of Sidecar is a flag (which gives
// it its default and its env variable) and every flag is a field.
func TestSidecarKeysAreFlags(t *testing.T) {
	var fields []string
	for key := range settingsByKey(Sidecar{}) {
		fields = append(fields, key)
	}
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.String(fileKey, "", "")
	sidecarLoader.flags(flags)
	var names []string
	flags.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	slices.Sort(fields)
	slices.Sort(names)
	if diff := cmp.Diff(names, fields); diff != "" {
		t.Errorf("flags (-) and struct keys (+) differ:\n%s", diff)
	}
}
