package platform

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"podwall.io/podwall/config"
)

// list is a ResourceList of cpu and memory; an empty quantity is left out.
func list(cpu, memory string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, q := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory} {
		if q != "" {
			out[name] = resource.MustParse(q)
		}
	}
	return out
}

// quantities compares quantities by value (0.1 and 100m are equal).
var quantities = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

func TestParse(t *testing.T) {
	const file = `
defaults: {mode: Monitor, fail-mode: closed, log-rate: 100, log-allow-interval: 30s}
namespaces:
  demo: {mode: protect, log-allows: all, resources: {requests: {cpu: 20m, memory: 48Mi}}}
  shop: {deny-memo-timeout: 5s}
  dns: {dns-min-ttl: 30s, dns-max-ttl: 10m, dns-max-names: 100, dns-max-addrs: 400}
workloads:
  demo/Deployment/client: {fail-mode: open, log-burst: 500, resources: {requests: {cpu: 0.1}, limits: {cpu: 1, memory: 256Mi}}}
`
	p, err := Parse([]byte(file), corev1.ResourceRequirements{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		namespace, workload string
		want                config.PlatformSettings
	}{
		{"other", "Deployment/web", config.PlatformSettings{"mode": "Monitor", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s"}},
		{"demo", "Deployment/web", config.PlatformSettings{"mode": "Protect", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all"}},
		{"demo", "Deployment/client", config.PlatformSettings{"mode": "Protect", "fail-mode": "open", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all", "log-burst": "500"}},
		{"demo", "", config.PlatformSettings{"mode": "Protect", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "log-allows": "all"}},
		{"shop", "Deployment/client", config.PlatformSettings{"mode": "Monitor", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s", "deny-memo-timeout": "5s"}},
		{"dns", "Deployment/client", config.PlatformSettings{"mode": "Monitor", "fail-mode": "closed", "log-rate": "100", "log-allow-interval": "30s",
			"dns-min-ttl": "30s", "dns-max-ttl": "10m", "dns-max-names": "100", "dns-max-addrs": "400"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, p.For(tc.namespace, tc.workload).Settings); diff != "" {
			t.Errorf("For(%s, %s) (-want +got):\n%s", tc.namespace, tc.workload, diff)
		}
	}
	resources := []struct {
		namespace, workload string
		want                corev1.ResourceRequirements
	}{
		{"other", "Deployment/web", corev1.ResourceRequirements{}},
		{"demo", "Deployment/web", corev1.ResourceRequirements{Requests: list("20m", "48Mi")}},
		{"demo", "Deployment/client", corev1.ResourceRequirements{Requests: list("100m", "48Mi"), Limits: list("1", "256Mi")}},
	}
	for _, tc := range resources {
		if diff := cmp.Diff(tc.want, p.For(tc.namespace, tc.workload).Resources, quantities); diff != "" {
			t.Errorf("For(%s, %s).Resources (-want +got):\n%s", tc.namespace, tc.workload, diff)
		}
	}
	if empty, err := Parse(nil, corev1.ResourceRequirements{}); err != nil || len(empty.For("a", "Pod/b").Settings) != 0 {
		t.Errorf("empty file: %v, %v", empty, err)
	}
}

func TestParseErrors(t *testing.T) {
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
		{"dns-min-ttl too short", "defaults: {dns-min-ttl: 0s}\n", []string{"defaults: dns-min-ttl: 0s is under the 1s minimum"}},
		{"dns-max-ttl under the floor", "namespaces: {demo: {dns-min-ttl: 2h}}\n", []string{"namespaces.demo: dns-max-ttl: 1h0m0s is under dns-min-ttl (2h0m0s)"}},
		{"dns-max-names zero", "defaults: {dns-max-names: 0}\n", []string{"defaults: dns-max-names: 0 is under the minimum of 1"}},
		{"a list", "defaults: {mode: [Protect]}\n", []string{"defaults: mode: want a single value"}},
		{"bad namespace", "namespaces: {Demo_1: {mode: Protect}}\n", []string{`namespaces: "Demo_1" is not a namespace name`}},
		{"bad workload", "workloads: {demo/client: {mode: Protect}}\n", []string{`workloads: "demo/client" is not namespace/Kind/name`}},
		{"resources: unknown field", "defaults: {resources: {request: {cpu: 1}}}\n", []string{`defaults: resources: want {requests: {cpu, memory}, limits: {cpu, memory}}`, `unknown field "request"`}},
		{"resources: not cpu or memory", "defaults: {resources: {limits: {ephemeral-storage: 1Gi}}}\n", []string{"defaults: resources.limits.ephemeral-storage: not a resource the platform sets"}},
		{"resources: not a quantity", "namespaces: {demo: {resources: {requests: {memory: lots}}}}\n", []string{`namespaces.demo: resources.requests.memory: "lots" is not a positive Kubernetes quantity`}},
		{"resources: zero", "defaults: {resources: {requests: {cpu: 0}}}\n", []string{`defaults: resources.requests.cpu: "0" is not a positive`}},
		{"resources: negative", "defaults: {resources: {limits: {cpu: -1}}}\n", []string{`defaults: resources.limits.cpu: "-1" is not a positive`}},
		{"resources: a list", "defaults: {resources: {requests: {cpu: [1]}}}\n", []string{"defaults: resources.requests.cpu: want a quantity"}},
		{"resources: request above the entry's limit", "defaults: {resources: {requests: {cpu: 2}, limits: {cpu: 1}}}\n", []string{"defaults: resources: requests.cpu: 2 is above limits.cpu 1"}},
		{"resources: request above an inherited limit", "namespaces: {demo: {resources: {limits: {cpu: 100m}}}}\nworkloads: {demo/Deployment/web: {resources: {requests: {cpu: 200m}}}}\n",
			[]string{"workloads.demo/Deployment/web: resources, with what it inherits", "requests.cpu: 200m is above limits.cpu 100m; set both in the same entry"}},
		{"resources: request above the injector's limit", "defaults: {resources: {requests: {memory: 256Mi}}}\n", []string{"defaults: resources, with what it inherits", "requests.memory: 256Mi is above limits.memory 128Mi"}},
		{"every problem at once", "defaults: {mode: x}\nnamespaces: {demo: {log-burst: 0}}\n", []string{"defaults: mode", "namespaces.demo: log-burst"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file), corev1.ResourceRequirements{Limits: list("", "128Mi")})
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

// FuzzPlatformFile feeds arbitrary platform files to Parse. It must never panic, and what it
// accepts must be settings the sidecar takes: each pod's resolved settings, as its environment, load
// and validate.
func FuzzPlatformFile(f *testing.F) {
	for _, seed := range []string{
		"defaults: {mode: Monitor, fail-mode: closed, log-rate: 100}\nnamespaces: {demo: {mode: Protect}}\nworkloads: {demo/Deployment/client: {fail-mode: open}}\n",
		"defaults: {log-allow-interval: 1h, log-burst: 1, deny-memo-timeout: 100ms, log-allows: none}\n",
		"defaults: {log-rate: 1e308}\n",
		"defaults: {log-rate: .nan}\n",
		"workloads: {a/B/c: {}}\n",
		"defaults: {resources: {requests: {cpu: 20m, memory: 48Mi}, limits: {cpu: 1, memory: 256Mi}}}\nnamespaces: {a: {resources: {limits: {memory: 64Mi}}}}\n",
		"workloads: {a/B/c: {resources: {requests: {memory: 1e308}}}}\n",
		"defaults: {resources: {requests: {cpu: 1Ki}}}\n",
		"defaults: {mode: [x]}\n",
		"&a [*a]",
		"defaults: !!binary aGVsbG8=\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := corev1.ResourceRequirements{Requests: list("10m", "32Mi"), Limits: list("", "192Mi")}
		p, err := Parse(data, base)
		if err != nil {
			return
		}
		check := func(ns, w string) {
			entry := p.For(ns, w)
			res := MergeResources(base, entry.Resources)
			if err := checkRequestsWithinLimits(res); err != nil {
				t.Fatalf("accepted resources the API server refuses in %s %s: %v", ns, w, err)
			}
			for _, l := range []corev1.ResourceList{res.Requests, res.Limits} {
				for name, q := range l {
					if !slices.Contains(platformResourceNames, name) || q.Sign() <= 0 {
						t.Fatalf("accepted resource %s=%s", name, q.String())
					}
				}
			}
			var args []string
			for k, v := range entry.Settings {
				args = append(args, "--"+k+"="+v)
			}
			if _, err := config.LoadSidecar(append(args, "--config=", "--policy-file=/p")); err != nil {
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

func TestSidecarResources(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--sidecar-memory-limit=lots", "--sidecar-cpu-request=some"}, []string{`sidecar-memory-limit: "lots" is not a Kubernetes quantity`, `sidecar-cpu-request: "some" is not`}},
		{[]string{"--sidecar-memory-request=256Mi"}, []string{"sidecar resources (flags sidecar-{cpu,memory}-{request,limit}): requests.memory: 256Mi is above limits.memory 192Mi"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := config.LoadInjector(append([]string{"--config="}, tt.args...))
			if err != nil {
				t.Fatal(err)
			}
			_, err = SidecarResources(c.Sidecar)
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
	c, err := config.LoadInjector([]string{"--config=", "--sidecar-cpu-limit=1", "--sidecar-memory-limit="})
	if err != nil {
		t.Fatal(err)
	}
	res, err := SidecarResources(c.Sidecar)
	if err != nil {
		t.Fatal(err)
	}
	want := corev1.ResourceRequirements{Requests: list("10m", "32Mi"), Limits: list("1", "")}
	if diff := cmp.Diff(want, res, quantities); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}
