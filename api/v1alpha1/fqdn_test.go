package v1alpha1_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testenv"
)

// fqdnRule is the CEL rule the CRD puts on a peer's fqdn; crdAccepts below does what it says.
const fqdnRule = "size(self) <= (self.startsWith('*.') ? 255 : 253)"

// fqdnSchema reads the fqdn property of an egress peer from the generated CRD.
func fqdnSchema(t testing.TB) map[string]any {
	data, err := os.ReadFile(filepath.Join(testenv.CRDDir(), "podwall.io_workloadpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	node := any(crd)
	for _, k := range []string{"spec", "versions", "0", "schema", "openAPIV3Schema", "properties", "spec", "properties", "egress",
		"items", "properties", "peers", "items", "properties", "fqdn"} {
		switch n := node.(type) {
		case map[string]any:
			node = n[k]
		case []any:
			node = n[0]
		}
	}
	s, ok := node.(map[string]any)
	if !ok {
		t.Fatalf("no fqdn property in the CRD's egress peers")
	}
	return s
}

// FuzzFQDNPattern: the CRD's pattern, length bound and CEL rule on fqdn accept exactly the names
// policy.ValidateNamePattern accepts, so that what the API server stores resolves. (The API server
// test, TestAPIServerValidation, checks a table of names against the real thing; this checks the
// pattern, as Go's regexp runs it there, on many more.)
func FuzzFQDNPattern(f *testing.F) {
	s := fqdnSchema(f)
	rules, _ := s["x-kubernetes-validations"].([]any)
	if len(rules) != 1 || rules[0].(map[string]any)["rule"] != fqdnRule {
		f.Fatalf("fqdn's CEL rules are %v, want only %q: update crdAccepts", rules, fqdnRule)
	}
	re := regexp.MustCompile(s["pattern"].(string))
	maxLen := int(s["maxLength"].(float64))
	crdAccepts := func(name string) bool {
		limit := 253
		if strings.HasPrefix(name, "*.") {
			limit = 255
		}
		// maxLength counts characters; the pattern admits ASCII only, where they are bytes.
		return re.MatchString(name) && len([]rune(name)) <= maxLen && len(name) <= limit
	}
	label63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
	for _, n := range []string{"example.com", "*.example.com", "_sip._tcp.example.com", "*.com", "a..com", "-a.b", "a-.b",
		"A.b", "a.b.", "a.*.b", "**.a.b", name253, "*." + name253, "c" + name253, label63 + "a.com", "a.b\n", "é.com"} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := policy.ValidateNamePattern(name)
		if got := crdAccepts(name); got != (err == nil) {
			t.Fatalf("fqdn %q: the CRD accepts it: %v; ValidateNamePattern: %v", name, got, err)
		}
	})
}
