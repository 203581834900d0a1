package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/internal/version"
)

// defaultInjector is the injector's configuration with every default.
func defaultInjector() Injector {
	return Injector{
		Serve: InjectorServe{Port: 9443, MetricsAddr: ":8080", HealthAddr: ":8081"},
		TLS: InjectorTLS{
			ServingTLS: ServingTLS{Mode: CertManaged, CertDir: "/var/run/podwall-injector/certs",
				Service: "podwall-injector", Secret: "podwall-injector-tls",
				Validity: 365 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour},
			Namespace: "podwall-system", WebhookConfig: "podwall-injector",
		},
		NativeSidecars: NativeAuto,
		Sidecar: InjectedSidecar{
			Image: version.Image("sidecar"), PullPolicy: "IfNotPresent", CPURequest: "10m", MemoryRequest: "32Mi",
			MemoryLimit: "192Mi", Port: 9947, PolicyGenURL: "https://podwall-policygen.podwall-system.svc:8443",
			PolicyGenCAConfigMap: "podwall-policygen-ca",
			TokenExpiration:      time.Hour,
		},
	}
}

func TestLoadInjector(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want func(c *Injector)
	}{{
		name: "defaults",
		want: func(*Injector) {},
	}, {
		name: "file, env over file, flags over env",
		file: "sidecar-image: reg/podwall:1\nnative-sidecars: never\ncert-hosts: [127.0.0.1, localhost]\nport: 1\n",
		env:  map[string]string{"PODWALL_PORT": "2", "PODWALL_SIDECAR_CPU_LIMIT": "100m"},
		args: []string{"--port=3", "--cert-mode=external"},
		want: func(c *Injector) {
			c.Sidecar.Image = "reg/podwall:1"
			c.NativeSidecars = NativeNever
			c.TLS.ExtraHosts = []string{"127.0.0.1", "localhost"}
			c.Sidecar.CPULimit = "100m"
			c.Serve.Port = 3
			c.TLS.Mode = CertExternal
		},
	}, {
		name: "the platform's defaults for every sidecar",
		env:  map[string]string{"PODWALL_SIDECAR_FAIL_MODE": "closed"},
		args: []string{"--sidecar-mode=Monitor", "--sidecar-log-rate=50"},
		want: func(c *Injector) {
			c.Sidecar.Platform = InjectedPlatform{Mode: "Monitor", FailMode: "closed", LogRate: "50"}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, args := writeSources(t, tt.file, tt.env, tt.args)
			got, err := LoadInjector(append([]string{"--config=" + path}, args...))
			if err != nil {
				t.Fatal(err)
			}
			want := defaultInjector()
			want.File = path
			tt.want(&want)
			if diff := cmp.Diff(want, got, sameConfig); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlatformDefaults(t *testing.T) {
	got := InjectedPlatform{Mode: "Protect", LogBurst: "300"}.PlatformDefaults()
	if diff := cmp.Diff(map[string]string{"mode": "Protect", "log-burst": "300"}, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestLoadInjectorErrors(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--port=0", "--sidecar-port=70000"}, []string{"port: 0 is not", "sidecar-port: 70000 is not"}},
		{[]string{"--cert-mode=self"}, []string{`cert-mode: "self" is not one of`}},
		{[]string{"--cert-mode=external", "--cert-dir="}, []string{"cert-dir: required"}},
		{[]string{"--cert-validity=30m", "--cert-renew-before=1h"}, []string{"cert-validity: 30m0s is under", "cert-renew-before: 1h0m0s must be"}},
		{[]string{"--native-sidecars=maybe"}, []string{"native-sidecars:"}},
		{[]string{"--sidecar-image="}, []string{"sidecar-image: required"}},
		{[]string{"--policygen-url=http://policygen"}, []string{"policygen-url:"}},
		{[]string{"--token-expiration=5m", "--namespace=Bad_NS"}, []string{"token-expiration:", "namespace:"}},
		{[]string{"--sidecar-mode=Enforce", "--sidecar-log-rate=fast"}, []string{`sidecar-mode: "Enforce" is not one of`, `sidecar-log-rate: "fast"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := LoadInjector(append([]string{"--config="}, tt.args...))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// FuzzInjectorFile feeds arbitrary files to LoadInjector: no panic, and an accepted config written back
// out loads the same.
func FuzzInjectorFile(f *testing.F) {
	seeds := []string{
		"sidecar-image: x\n", "port: 70000\n", "cert-hosts: [a, 1.2.3.4]\ncert-validity: 2h\ncert-renew-before: 1h\n",
		"sidecar-cpu-limit: 1e3\n", "native-sidecars: never\nsidecar-privileged: true\n", "- a\n",
	}
	fuzzFile(f, seeds, LoadInjector, Injector.validate, func(c *Injector) *string { return &c.File }, sameConfig)
}
