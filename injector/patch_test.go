package injector

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	crpatch "gomodules.xyz/jsonpatch/v2"
	"sigs.k8s.io/yaml"
)

// diffCases are pairs of documents, before and after.
var diffCases = []struct{ name, a, b string }{
	{"equal", `{"a":1}`, `{"a":1}`},
	{"member added", `{"a":1}`, `{"a":1,"b":{"c":[1,2]}}`},
	{"member removed", `{"a":1,"b":2}`, `{"a":1}`},
	{"member replaced", `{"a":"x"}`, `{"a":"y"}`},
	{"type changed", `{"a":"1","b":null,"c":[1],"d":{}}`, `{"a":1,"b":{},"c":{},"d":null}`},
	{"nested", `{"spec":{"containers":[{"name":"app","image":"a"}]}}`, `{"spec":{"containers":[{"name":"app","image":"b","securityContext":{"capabilities":{"drop":["NET_RAW"]}}}]}}`},
	{"array grown at the front", `{"l":[{"n":"a"},{"n":"b"}]}`, `{"l":[{"n":"p"},{"n":"a"},{"n":"b"}]}`},
	{"array shrunk", `{"l":[1,2,3,4]}`, `{"l":[2]}`},
	{"equal values spelled differently", `{"n":1,"s":"\u0041","t":true,"x":1e2}`, `{"n":1.0,"s":"A","t":true,"x":100}`},
	{"booleans", `{"t":true,"f":false}`, `{"t":false,"f":true}`},
	{"escaped keys", `{"a/b":1,"c~d":{"e":1}}`, `{"a/b":2,"c~d":{"e":2},"\"q\"":3}`},
	{"keys encoding/json escapes", `{"a<b":1,"c&d\u0001":{"e":1}}`, `{"a<b":2,"c&d\u0001":{"e>":2},"é":3}`},
	{"key given twice", `{"a":1,"a":2,"b":1,"b":1}`, `{"a":2,"c":3,"c":4}`},
	{"whitespace", " { \"a\" : [ 1 , 2 ] , \"b\" : { } }\n", `{"a":[1,3],"b":{"c":"d"}}`},
	{"empty containers", `{"a":{},"b":[]}`, `{"a":{"x":1},"b":[{}]}`},
	{"strings with escapes", `{"s":"a\"b\\c","u":"\u00e9"}`, `{"s":"a\"b\\d","u":"é"}`},
	{"invalid UTF-8 decodes alike", "{\"s\":\"\xff\"}", "{\"s\":\"\xfe\"}"},
	{"top level replaced", `[1]`, `{"a":1}`},
	{"empty key", `{"":{}}`, `{"":{"":""}}`},
}

// TestDiffJSON checks diffJSON against gomodules.xyz/jsonpatch's CreatePatch, which controller-runtime's
// defaulters use and diffJSON stands in for, on the cases and on each golden fixture's pod before and
// after the webhook.
func TestDiffJSON(t *testing.T) {
	for _, tc := range diffCases {
		t.Run(tc.name, func(t *testing.T) { checkDiff(t, []byte(tc.a), []byte(tc.b)) })
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			raw := readPodJSON(t, filepath.Join("testdata", tc.name+".yaml"))
			var golden goldenResult
			data := readPodJSON(t, filepath.Join("testdata", tc.name+".golden.yaml"))
			if err := yaml.Unmarshal(data, &golden); err != nil {
				t.Fatal(err)
			}
			injected, err := json.Marshal(golden.Pod)
			if err != nil {
				t.Fatal(err)
			}
			checkDiff(t, raw, injected)
		})
	}
}

// FuzzDiffJSON checks diffJSON against CreatePatch on any two JSON documents.
func FuzzDiffJSON(f *testing.F) {
	for _, tc := range diffCases {
		f.Add([]byte(tc.a), []byte(tc.b))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if json.Valid(a) && json.Valid(b) {
			checkDiff(t, a, b)
		}
	})
}

// checkDiff checks that diffJSON(a, b) gives CreatePatch's operations, values compared decoded, and
// that its encoded patch turns a into b.
func checkDiff(t *testing.T, a, b []byte) {
	t.Helper()
	want, err := crpatch.CreatePatch(a, b)
	if err != nil {
		// CreatePatch decodes every number as a float64 and refuses one out of its range, which
		// neither the API server nor json.Marshal writes; diffJSON reads only the numbers it compares.
		return
	}
	ops, err := diffJSON(a, b)
	if err != nil {
		t.Fatalf("diffJSON: %v", err)
	}
	type op struct {
		Op, Path string
		Value    any
	}
	got := make([]op, 0, len(ops))
	for _, o := range ops {
		var v any
		if o.op != "remove" {
			if err := json.Unmarshal(o.value, &v); err != nil {
				t.Fatalf("value of %s %s: %v", o.op, o.path, err)
			}
		}
		got = append(got, op{o.op, o.path, v})
	}
	wanted := make([]op, 0, len(want))
	for _, o := range want {
		wanted = append(wanted, op{o.Operation, o.Path, o.Value})
	}
	// Operations on the members of one object come in map order from CreatePatch.
	byPath := func(x, y op) int { return strings.Compare(x.Path+" "+x.Op, y.Path+" "+y.Op) }
	slices.SortFunc(got, byPath)
	slices.SortFunc(wanted, byPath)
	if diff := cmp.Diff(wanted, got); diff != "" {
		t.Fatalf("operations (-CreatePatch +diffJSON):\n%s", diff)
	}
	// evanphx/json-patch patches objects only, and mishandles a pointer with an empty key, which a
	// pod never has.
	if trimSpace(a)[0] != '{' || slices.ContainsFunc(ops, func(o patchOp) bool { return o.path == "" || strings.Contains(o.path+"/", "//") }) {
		return
	}
	encoded, err := encodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(encoded)
	if err != nil {
		t.Fatalf("decode %s: %v", encoded, err)
	}
	// Applied to a as decoded, as the API server holds it: one member per key.
	var doc any
	if err := json.Unmarshal(a, &doc); err != nil {
		t.Fatal(err)
	}
	decoded, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(decoded)
	if err != nil {
		t.Fatalf("apply %s: %v", encoded, err)
	}
	var gotDoc, wantDoc any
	if err := json.Unmarshal(patched, &gotDoc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &wantDoc); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotDoc, wantDoc) {
		t.Fatalf("patch %s turns %s into %s, want %s", encoded, a, patched, b)
	}
}

// TestPatchKeepsUnknownFields checks that the webhook's patch leaves alone what decoding the pod
// drops: fields podwall's API types do not know (the API server may be newer) and empty ones they
// omit.
func TestPatchKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","labels":{}},
		"spec":{"futureField":{"a":1},"containers":[{"name":"web","image":"nginx:1.27","futureField":true}]}}`)
	got := admit(t, New(SidecarOptions{NativeSidecars: true}).Webhook(Namespace{}), raw)
	if !got.Allowed {
		t.Fatalf("denied: %s", got.Message)
	}
	pod := got.Pod
	spec := pod["spec"].(map[string]any)
	if _, ok := spec["initContainers"]; !ok {
		t.Fatalf("pod not injected: %v", pod)
	}
	for what, v := range map[string]any{
		"spec.futureField":               spec["futureField"],
		"spec.containers[0].futureField": spec["containers"].([]any)[0].(map[string]any)["futureField"],
		"metadata.labels":                pod["metadata"].(map[string]any)["labels"],
	} {
		if v == nil {
			t.Errorf("%s removed", what)
		}
	}
}
