package injector

import (
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
	"podwall.io/podwall/internal/mesh"
)

// goldenPodIPs stand in for status.podIPs, which the kubelet renders comma-separated.
const goldenPodIPs = "10.1.2.3,fd00::3"

// TestSidecarLoadsInjectedSettings hands the podwall container's environment and arguments (and the
// baseline init container's) of every injected golden pod to the sidecar's own loader,
// config.LoadSidecar, as the kubelet would: each must load and mean what the injector meant.
func TestSidecarLoadsInjectedSettings(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "PODWALL_") {
			t.Setenv(name, "") // an empty variable counts as unset
		}
	}
	// The sidecar's defaults; it needs a policy source to be valid, and meant sets the injector's.
	defaults, err := config.LoadSidecar([]string{"--config=", "--policygen-url=https://policygen.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	sameAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	for _, tc := range goldenCases {
		pod, ok := injectedGoldenPod(t, tc.name)
		if !ok {
			continue
		}
		for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
			if c.Name != sidecar.ContainerName && c.Name != sidecar.InitContainerName {
				continue
			}
			t.Run(tc.name+"/"+c.Name, func(t *testing.T) {
				env := kubeletEnv(t, pod, c)
				for name, value := range env {
					t.Setenv(name, value)
				}
				got, err := config.LoadSidecar(c.Args)
				if err != nil {
					t.Fatalf("the sidecar refuses the injected settings: %v", err)
				}
				if diff := cmp.Diff(meant(t, tc, pod, c, defaults), got, sameAddr); diff != "" {
					t.Errorf("loaded config (-meant +got):\n%s", diff)
				}
				// The loader looks up only the variables of the keys it declares and ignores any
				// other: the same settings as flags, which it refuses when unknown, show that each
				// variable names a key.
				args := slices.Clone(c.Args)
				for name, value := range env {
					t.Setenv(name, "")
					key, _ := strings.CutPrefix(name, "PODWALL_")
					args = append(args, "--"+strings.ToLower(strings.ReplaceAll(key, "_", "-"))+"="+value)
				}
				fromFlags, err := config.LoadSidecar(args)
				if err != nil {
					t.Fatalf("the injector sets a variable the sidecar does not know: %v", err)
				}
				if diff := cmp.Diff(got, fromFlags, sameAddr); diff != "" {
					t.Errorf("the variables as flags load differently (-env +flags):\n%s", diff)
				}
			})
		}
	}
}

// kubeletEnv is c's environment as the kubelet would set it in pod: the downward API's fields
// resolved, podIPs as goldenPodIPs.
func kubeletEnv(t *testing.T, pod *corev1.Pod, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "PODWALL_") {
			t.Errorf("variable %s is not the sidecar's (PODWALL_*)", e.Name)
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef == nil:
			t.Fatalf("variable %s: only downward API fields are expected", e.Name)
		default:
			fields := map[string]string{
				"metadata.name":           pod.Name,
				"metadata.namespace":      pod.Namespace,
				"spec.serviceAccountName": pod.Spec.ServiceAccountName,
				"status.podIPs":           goldenPodIPs,
			}
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("variable %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		}
	}
	return env
}

// meant is the sidecar configuration the injector means c to have in pod: the defaults, with the
// settings the injector owns.
func meant(t *testing.T, tc goldenCase, pod *corev1.Pod, c corev1.Container, defaults config.Sidecar) config.Sidecar {
	t.Helper()
	opts := tc.injector(t).opts
	want := defaults
	want.File = sidecar.ConfigFile
	want.ListenAddr = ":" + strconv.Itoa(int(opts.Port))
	want.CacheDir = sidecar.CacheDir
	want.PolicyGen = config.PolicyGen{URL: opts.PolicyGenURL, TokenFile: sidecar.TokenFile}
	want.PolicyGen.CA = tc.platform(t).Settings[string(sidecar.KeyPolicyGenCA)]
	want.Pod = config.Pod{Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName,
		Workload: workloadOf(pod)}
	for ip := range strings.SplitSeq(goldenPodIPs, ",") {
		want.Pod.IPs = append(want.Pod.IPs, netip.MustParseAddr(ip))
	}
	if m, ok := mesh.In(&pod.Spec, pod.Annotations); ok {
		want.Mesh = config.MeshPorts{Outbound: []uint16{uint16(m.Outbound)}, Inbound: []uint16{uint16(m.Inbound)}}
	}
	if holders := netRawHolders(pod); len(holders) > 0 {
		want.AppNetRaw = holders
	}
	want.BaselineOnly = c.Name == sidecar.InitContainerName
	return want
}
