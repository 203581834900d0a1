package injector

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
	"podwall.io/podwall/config/platform"
	"podwall.io/podwall/internal/testutil"
)

// testPlatformConfigMap writes the platform's ConfigMap in podwall-system as a cluster admin and
// reads back what the API server stores for new pods: a namespace's and a workload's entries land in
// the sidecar's environment and its container's resources; a first version that does not parse refuses pods with a message, a
// later bad version leaves the last good one in force. A namespace user, who may write ConfigMaps in
// her own namespace, may not write the platform's.
func testPlatformConfigMap(t *testing.T, c *cluster) {
	ctx := context.Background()
	cms := c.cs.CoreV1().ConfigMaps("podwall-system")
	write := func(content string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: sidecar.PlatformConfigMap},
			Data: map[string]string{sidecar.PlatformFile: content}}
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = cms.Delete(ctx, sidecar.PlatformConfigMap, metav1.DeleteOptions{}) })
	client := func(p *corev1.Pod) {
		p.Labels = map[string]string{"pod-template-hash": "7d9f"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "client-7d9f",
			UID: "0d5c2c1e-7d9f-4c5a-9a3e-000000000001", Controller: ptr.To(true)}}
	}
	env := func(p *corev1.Pod) map[string]string {
		out := map[string]string{}
		for _, e := range p.Spec.InitContainers[0].Env {
			out[e.Name] = e.Value
		}
		return out
	}

	write("defaults: {mode: Monitor}\nnamespaces: {opted: {mode: Protekt}}\n")
	testutil.Eventually(t, 10*time.Second, func() error {
		_, _, err := c.createPod("opted", testPod())
		if err == nil || !strings.Contains(err.Error(), "ConfigMap podwall-platform in podwall-system (the platform's settings) is invalid and no earlier version of it was good") ||
			!strings.Contains(err.Error(), `namespaces.opted: mode: "Protekt"`) {
			return fmt.Errorf("pod with only a bad platform ConfigMap: %v, want refused naming the key", err)
		}
		return nil
	})

	const good = `
defaults: {mode: Monitor, log-rate: 200}
namespaces:
  opted: {mode: Protect, log-allows: all, resources: {requests: {cpu: 20m}}}
workloads:
  opted/Deployment/client: {fail-mode: open, resources: {requests: {memory: 64Mi}, limits: {memory: 256Mi}}}
`
	write(good)
	want := map[string]map[string]string{
		"client": {"PODWALL_MODE": "Protect", "PODWALL_LOG_ALLOWS": "all", "PODWALL_LOG_RATE": "200", "PODWALL_FAIL_MODE": "open"},
		"other":  {"PODWALL_MODE": "Protect", "PODWALL_LOG_ALLOWS": "all", "PODWALL_LOG_RATE": "200", "PODWALL_FAIL_MODE": ""},
	}
	// Set over the injector's own (sidecarResources), resource by resource.
	wantResources := map[string]corev1.ResourceRequirements{
		"client": resources("20m", "64Mi", "", "256Mi"),
		"other":  resources("20m", "32Mi", "", "192Mi"),
	}
	check := func(when string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			for name, mutate := range map[string]func(*corev1.Pod){"client": client, "other": func(*corev1.Pod) {}} {
				p, _, err := c.createPod("opted", testPod(mutate))
				if err != nil {
					return err
				}
				got := env(p)
				for k, v := range want[name] {
					if got[k] != v {
						return fmt.Errorf("%s: %s pod: %s=%q, want %q", when, name, k, got[k], v)
					}
				}
				if diff := cmp.Diff(wantResources[name], p.Spec.InitContainers[0].Resources); diff != "" {
					return fmt.Errorf("%s: %s pod: podwall container's resources as stored (-want +got):\n%s", when, name, diff)
				}
			}
			return nil
		})
	}
	check("good platform ConfigMap")
	write("defaults: {fail-mode: open, bogus: 1}\n")
	// The bad version is seen (a pod is created after it) and changes nothing.
	check("after a bad version")
	// A request over the limit the injector sets (its sidecar-memory-limit flag) would make every pod
	// invalid: the version is refused as a whole.
	write("defaults: {fail-mode: open, resources: {requests: {memory: 512Mi}}}\n")
	check("after a version asking for more memory than the injector's limit")

	t.Run("a namespace user cannot write the platform's ConfigMap", func(t *testing.T) {
		asEve := c.namespaceUser(t, "configmap-editor",
			[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}}, "opted").CoreV1()
		weak := map[string]string{sidecar.PlatformFile: "defaults: {mode: Learn, fail-mode: open}\n"}
		testutil.Eventually(t, 10*time.Second, func() error { // the RoleBinding takes effect
			own := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "podwall-config"}, Data: map[string]string{"config.yaml": "mode: Learn\n"}}
			_, err := asEve.ConfigMaps("opted").Create(ctx, own, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("eve's own namespace: %v", err)
			}
			return nil
		})
		_, err := asEve.ConfigMaps("podwall-system").Create(ctx,
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "podwall-platform-2"}, Data: weak}, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("create a ConfigMap in podwall-system as eve: %v, want forbidden", err)
		}
		_, err = asEve.ConfigMaps("podwall-system").Update(ctx,
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: sidecar.PlatformConfigMap}, Data: weak}, metav1.UpdateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("update the platform ConfigMap as eve: %v, want forbidden", err)
		}
		cm, err := cms.Get(ctx, sidecar.PlatformConfigMap, metav1.GetOptions{})
		if err != nil || strings.Contains(cm.Data[sidecar.PlatformFile], "Learn") {
			t.Errorf("platform ConfigMap after eve: %v %v", cm.Data, err)
		}
		if err := asEve.ConfigMaps("opted").Delete(ctx, "podwall-config", metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	})
}

// platformFor is a PlatformSource with the same entry for every pod.
type platformFor platform.Entry

func (p platformFor) For(string, string) (platform.Entry, error) {
	return platform.Entry(p), nil
}

// TestPlatformDefaultsUnderTheConfigMap: the injector's own platform defaults and resources reach
// every sidecar, and the platform's entry overrides them key by key and resource by resource.
func TestPlatformDefaultsUnderTheConfigMap(t *testing.T) {
	in := New(SidecarOptions{PolicyGenURL: "https://policygen", NativeSidecars: true,
		PlatformDefaults: map[string]string{"mode": "Monitor", "log-rate": "50"},
		Resources:        resources("10m", "32Mi", "", "192Mi"),
		Platform: platformFor{Settings: config.PlatformSettings{"mode": "Protect", "fail-mode": "open"},
			Resources: resources("50m", "", "", "256Mi")}})
	pod := testPod()
	if _, err := in.Inject(pod, Namespace{Name: "opted"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range pod.Spec.InitContainers[0].Env {
		got[e.Name] = e.Value
	}
	for k, v := range map[string]string{"PODWALL_MODE": "Protect", "PODWALL_FAIL_MODE": "open", "PODWALL_LOG_RATE": "50"} {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if diff := cmp.Diff(resources("50m", "32Mi", "", "256Mi"), pod.Spec.InitContainers[0].Resources); diff != "" {
		t.Errorf("podwall container's resources (-want +got):\n%s", diff)
	}
}

// sidecarResources are the injector's own resources for the sidecar in these tests: its flags
// defaults (config.LoadInjector).
var sidecarResources = resources("10m", "32Mi", "", "192Mi")

// resources are requests and limits of cpu and memory; an empty quantity is left out.
func resources(cpuRequest, memoryRequest, cpuLimit, memoryLimit string) corev1.ResourceRequirements {
	list := func(cpu, memory string) corev1.ResourceList {
		out := corev1.ResourceList{}
		for name, q := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory} {
			if q != "" {
				out[name] = resource.MustParse(q)
			}
		}
		return out
	}
	return corev1.ResourceRequirements{Requests: list(cpuRequest, memoryRequest), Limits: list(cpuLimit, memoryLimit)}
}
