package injector

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the injector's output")

// goldenCase is one fixture: testdata/<name>.yaml goes in, testdata/<name>.golden.yaml is expected.
type goldenCase struct {
	name string
	// strict sends the pod through the strict path, as a namespace labelled podwall.io/strict=true.
	strict bool
	// enforce is the Pod Security level the namespace enforces, when the injected pod cannot meet it.
	enforce string
	// server is the API server's version, which picks the layout; default v1.37.2.
	server string
	// opts are the injector's options; zero means the defaults.
	opts SidecarOptions
	// policyGenCA is the testdata file with the CA bundle policygen published; none when empty.
	policyGenCA string
}

var goldenCases = []goldenCase{
	{name: "plain-pod"},
	{name: "deployment-pod"},
	{name: "istio-pod"},
	{name: "linkerd-pod"},
	{name: "host-network"},
	{name: "strict-host-network", strict: true},
	{name: "host-pid"},
	{name: "strict-host-pid", strict: true},
	{name: "share-process-namespace"},
	{name: "strict-share-process-namespace", strict: true},
	{name: "reserved-volume-mount"},
	{name: "reserved-volume-declared"},
	{name: "reinjected-app-mount"},
	{name: "ephemeral-mount"},
	{name: "opt-out"},
	{name: "strict-opt-out", strict: true},
	{name: "strict-net-admin", strict: true},
	{name: "already-injected"},
	{name: "net-admin-app"},
	{name: "init-containers"},
	{name: "net-raw-existing"},
	{name: "ping-range-set"},
	{name: "allow-net-raw"},
	{name: "strict-allow-net-raw", strict: true},
	{name: "net-raw-add"},
	{name: "strict-net-raw-add", strict: true},
	{name: "old-cluster", server: "v1.28.15"},
	{name: "custom-config", opts: SidecarOptions{
		Image:      "registry.example/podwall/sidecar:1.2.0",
		PullPolicy: corev1.PullAlways,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		Privileged:      true,
		Port:            9950,
		PolicyGenURL:    "https://policygen.example:443",
		TokenExpiration: 2 * time.Hour,
	}, policyGenCA: "policygen-ca.pem"},
	{name: "system-namespace"},
	{name: "enforce-baseline", enforce: "baseline"},
	{name: "enforce-restricted", enforce: "restricted"},
	{name: "enforce-baseline-opt-out", enforce: "baseline"},
	{name: "strict-enforce-baseline-opt-out", strict: true, enforce: "baseline"},
}

// goldenResult is what a fixture records: the admission answer and the pod the API server would store.
type goldenResult struct {
	Allowed  bool           `json:"allowed"`
	Message  string         `json:"message,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Pod      map[string]any `json:"pod"`
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.injector(t)
			raw := readPodJSON(t, filepath.Join("testdata", tc.name+".yaml"))
			route := Namespace{Strict: tc.strict, Enforce: tc.enforce}
			got := admit(t, in.Webhook(route), raw)
			path := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				writeGolden(t, path, got)
			}
			var want goldenResult
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./injector -update)", err)
			}
			if err := yaml.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("admission (-%s +got):\n%s", path, diff)
			}
			if !got.Allowed {
				return
			}
			// A second pass over the result, as when the API server re-invokes the webhook, changes nothing.
			again, err := json.Marshal(got.Pod)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got.Pod, admit(t, in.Webhook(route), again).Pod); diff != "" {
				t.Errorf("second pass changed the pod (-first +second):\n%s", diff)
			}
		})
	}
}

func (tc goldenCase) injector(t *testing.T) *Injector {
	t.Helper()
	server := tc.server
	if server == "" {
		server = "v1.37.2"
	}
	native, err := nativeSupported(server)
	if err != nil {
		t.Fatal(err)
	}
	opts := tc.opts
	opts.NativeSidecars = native
	if opts.PolicyGenURL == "" {
		opts.PolicyGenURL = "https://podwall-policygen.podwall-system.svc:8443"
	}
	opts.Platform = tc.platform(t)
	return New(opts)
}

// platform is what the case's platform namespace holds for every pod: policygen's CA bundle, when
// the case has one.
func (tc goldenCase) platform(t *testing.T) platformFor {
	t.Helper()
	if tc.policyGenCA == "" {
		return platformFor{}
	}
	ca, err := os.ReadFile(filepath.Join("testdata", tc.policyGenCA))
	if err != nil {
		t.Fatal(err)
	}
	return platformFor{Settings: config.PlatformSettings{string(sidecar.KeyPolicyGenCA): string(ca)}}
}

// injectedGoldenPod reads the pod of testdata/<name>.golden.yaml; ok is false when the webhook denied
// it or left it uninjected.
func injectedGoldenPod(t testing.TB, name string) (pod *corev1.Pod, ok bool) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Allowed bool       `json:"allowed"`
		Pod     corev1.Pod `json:"pod"`
	}
	if err := yaml.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &g.Pod, g.Allowed && g.Pod.Annotations[AnnotationStatus] != ""
}

func readPodJSON(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return raw
}

// admit sends a pod CREATE through the webhook as the API server would and applies the returned
// JSON patch to the pod.
func admit(t *testing.T, wh *Webhook, raw []byte) goldenResult {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, PathInject, bytes.NewReader(review(t, raw)))
	req.Header.Set("Content-Type", "application/json")
	wh.ServeHTTP(rec, req)
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil {
		t.Fatalf("answer is no AdmissionReview (%v): %s", err, rec.Body.Bytes())
	}
	resp := answer.Response
	if resp.UID != "fuzz" {
		t.Fatalf("answer for UID %q, want the request's", resp.UID)
	}
	out := goldenResult{Allowed: resp.Allowed, Warnings: resp.Warnings}
	if resp.Result != nil {
		out.Message = resp.Result.Message
	}
	patched := raw
	if len(resp.Patch) > 0 {
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("decode patch: %v", err)
		}
		if patched, err = patch.Apply(raw); err != nil {
			t.Fatalf("apply patch: %v", err)
		}
	}
	if err := json.Unmarshal(patched, &out.Pod); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeGolden(t *testing.T, path string, r goldenResult) {
	t.Helper()
	data, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
