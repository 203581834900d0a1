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
		FailMode:        FailClosed,
		DenyMemoTimeout: 2 * time.Second,
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
log-rate: 5
log-allow-interval: 30s
mesh-outbound-ports: [15001]
queue-base: 200
policy-file: /from/file
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
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.Rate, s.Live.Log.AllowInterval = policy.Monitor, 5, 30*time.Second
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{15001}, 200, "/from/file"
		},
	}, {
		name: "env over file",
		file: file,
		env: map[string]string{"PODWALL_MODE": "Protect", "PODWALL_MESH_OUTBOUND_PORTS": "4140, 15001",
			"PODWALL_LOG_ALLOW_INTERVAL": "10s", "PODWALL_QUEUE_BASE": "300"},
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.Rate, s.Live.Log.AllowInterval = policy.Protect, 5, 10*time.Second
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{4140, 15001}, 300, "/from/file"
		},
	}, {
		name: "flags over env",
		file: file,
		env: map[string]string{"PODWALL_MODE": "Protect", "PODWALL_MESH_OUTBOUND_PORTS": "4140",
			"PODWALL_LOG_ALLOW_INTERVAL": "10s", "PODWALL_QUEUE_BASE": "300"},
		args: []string{"--config=$FILE", "--mode=Learn", "--mesh-outbound-ports=1,2", "--queue-base=400"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Live.Log.Rate, s.Live.Log.AllowInterval = policy.Learn, 5, 10*time.Second
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{1, 2}, 400, "/from/file"
		},
	}, {
		name: "an explicitly empty flag still wins",
		file: file,
		env:  map[string]string{"PODWALL_MODE": "Protect"},
		args: []string{"--config=$FILE", "--mode="},
		want: func(s *Sidecar) {
			s.Live.Log.Rate, s.Live.Log.AllowInterval = 5, 30*time.Second
			s.Mesh.Outbound, s.Queue.Base, s.PolicyFile = []uint16{15001}, 200, "/from/file"
		},
	}, {
		name: "an empty env variable counts as unset",
		file: "mode: Monitor\npolicy-file: /p\n",
		env:  map[string]string{"PODWALL_MODE": ""},
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) { s.Live.Mode, s.PolicyFile = policy.Monitor, "/p" },
	}, {
		name: "file named by env",
		file: "policy-file: /p\n",
		env:  map[string]string{"PODWALL_CONFIG": "$FILE"},
		want: func(s *Sidecar) { s.PolicyFile = "/p" },
	}, {
		name: "file named by flag over env",
		file: "policy-file: /p\n",
		env:  map[string]string{"PODWALL_CONFIG": "/nonexistent/config.yaml"},
		args: []string{"--config", "$FILE"},
		want: func(s *Sidecar) { s.PolicyFile = "/p" },
	}, {
		name: "mode in any letter case, lists in YAML flow and block style",
		file: "mode: protect\nmesh-inbound-ports:\n  - 15006\npod-ips: [10.0.0.7]\npolicy-file: /p\n",
		args: []string{"--config=$FILE"},
		want: func(s *Sidecar) {
			s.Live.Mode, s.Mesh.Inbound, s.PolicyFile = policy.Protect, []uint16{15006}, "/p"
			s.Pod.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.7")}
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

func TestLoadSidecarErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		// want are parts of the error, above all the offending keys.
		want []string
	}{
		{name: "unknown key", file: "modee: Protect\nlograte: 1\n", want: []string{`unknown key "lograte", "modee"`}},
		{name: "nested key", file: "log:\n  rate: 1\n", want: []string{`unknown key "log.rate"`}},
		{name: "file names itself", file: "config: /etc/other.yaml\n", want: []string{`key "config" names the file itself`}},
		{name: "not YAML", file: "mode: [Protect\n", want: []string{"config file"}},
		{name: "not a mapping", file: "- mode\n", want: []string{"config file"}},
		{name: "mode", file: "mode: Enforce\n", want: []string{`mode: "Enforce" is not one of "", "Learn"`}},
		{name: "log-allows", file: "log-allows: some\n", want: []string{"log-allows:"}},
		{name: "log-allow-interval too short", file: "log-allow-interval: 5\n", want: []string{"log-allow-interval: 5ns"}},
		{name: "log-allow-interval not a duration", file: "log-allow-interval: soon\n", want: []string{"log-allow-interval"}},
		{name: "log-rate zero", file: "log-rate: 0\n", want: []string{"log-rate: 0"}},
		{name: "log-rate NaN", file: "log-rate: .nan\n", want: []string{"log-rate: NaN"}},
		{name: "log-rate infinite", file: "log-rate: .inf\n", want: []string{"log-rate: +Inf"}},
		{name: "log-burst", env: map[string]string{"PODWALL_LOG_BURST": "0"}, want: []string{"log-burst: 0"}},
		{name: "log-burst not a number", env: map[string]string{"PODWALL_LOG_BURST": "lots"}, want: []string{"log-burst"}},
		{name: "port zero", file: "mesh-outbound-ports: [0]\n", want: []string{"mesh-outbound-ports: 0 is not a port"}},
		{name: "port too big", file: "mesh-inbound-ports: [70000]\n", want: []string{"mesh-inbound-ports[0]", "70000 does not fit"}},
		{name: "port wraps from env", env: map[string]string{"PODWALL_MESH_INBOUND_PORTS": "65536"}, want: []string{"mesh-inbound-ports[0]"}},
		{name: "port twice", file: "mesh-inbound-ports: [15001]\n", want: []string{"mesh-inbound-ports: port 15001 is listed twice (also in mesh-outbound-ports)"}},
		{name: "queue range", args: []string{"--queue-base=65535", "--queue-count=2"}, want: []string{"queue-count: queues 65535 to 65536"}},
		{name: "queue-base negative", file: "queue-base: -1\n", want: []string{"queue-base", "-1 does not fit"}},
		{name: "queue-base fraction", file: "queue-base: 100.5\n", want: []string{"queue-base", "100.5 does not fit"}},
		{name: "queue-count bool", file: "queue-count: true\n", want: []string{"queue-count"}},
		{name: "deny-memo-timeout", env: map[string]string{"PODWALL_DENY_MEMO_TIMEOUT": "10ms"}, want: []string{"deny-memo-timeout: 10ms is under the 100ms minimum"}},
		{name: "fail-mode", file: "fail-mode: half\n", want: []string{`fail-mode: "half" is not one of "closed", "open"`}},
		{name: "no policy source", args: []string{"--policy-file="}, want: []string{"policy-file: set policy-file (standalone) or policygen-url"}},
		{name: "two policy sources", file: "policygen-url: https://pg\n", want: []string{"policygen-url: set policy-file or policygen-url, not both"}},
		{name: "policygen over http", file: "policygen-url: http://pg:80\n", args: []string{"--policy-file="}, want: []string{"policygen-url: \"http://pg:80\" is not an https URL"}},
		{name: "policygen without token", file: "policygen-url: https://pg\npolicygen-token-file: \"\"\n", args: []string{"--policy-file="}, want: []string{"policygen-token-file: required"}},
		{name: "listen-addr without port", file: "listen-addr: \"9947\"\n", want: []string{"listen-addr: \"9947\" is not host:port"}},
		{name: "listen-addr port zero", file: "listen-addr: \":0\"\n", want: []string{"listen-addr: \"0\" is not a port"}},
		{name: "listen-addr on a mesh port", file: "listen-addr: 127.0.0.1:15006\n", want: []string{"listen-addr: port 15006 is a mesh proxy port"}},
		{name: "pod-name", env: map[string]string{"PODWALL_POD_NAME": "Web_1"}, want: []string{"pod-name:"}},
		{name: "pod-namespace", env: map[string]string{"PODWALL_POD_NAMESPACE": "a.b"}, want: []string{"pod-namespace:"}},
		{name: "pod-service-account", env: map[string]string{"PODWALL_POD_SERVICE_ACCOUNT": "-sa"}, want: []string{"pod-service-account:"}},
		{name: "pod-ips", env: map[string]string{"PODWALL_POD_IPS": "10.0.0.1,bogus"}, want: []string{"pod-ips[1]"}},
		{name: "pod-ips with zone", file: "pod-ips: [\"fe80::1%eth0\"]\n", want: []string{"pod-ips:"}},
		{name: "workload", env: map[string]string{"PODWALL_WORKLOAD": "web"}, want: []string{`workload: "web" is not Kind/name`}},
		{name: "every problem at once", file: "mode: x\nfail-mode: y\nlog-burst: 0\n", want: []string{"mode:", "fail-mode:", "log-burst:"}},
		{name: "unknown flag", args: []string{"--modes=Protect"}, want: []string{"unknown flag: --modes"}},
		{name: "positional argument", args: []string{"Protect"}, want: []string{`unexpected argument "Protect"`}},
		{name: "file too large", file: "# " + strings.Repeat("x", maxFileSize) + "\n", want: []string{"larger than the 1048576-byte limit"}},
		{name: "file is a device", args: []string{"--config=/dev/zero"}, want: []string{"larger than the 1048576-byte limit"}},
		{name: "file is a directory", args: []string{"--config=" + os.TempDir()}, want: []string{"read config file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, args := writeSources(t, tc.file, tc.env, append([]string{"--config=$FILE", "--policy-file=/p"}, tc.args...))
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
