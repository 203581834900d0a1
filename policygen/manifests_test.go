package policygen_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/policygen/internal/pgtest"
)

// TestManifestsAreAccepted creates every object of manifests/policygen on a real API server, which
// validates them (Deployment, Service, RBAC, PodDisruptionBudget).
func TestManifestsAreAccepted(t *testing.T) {
	_, direct := pgtest.Start(t)
	pgtest.Namespace(t, direct, "podwall-system", nil)
	c := client.WithFieldValidation(direct, metav1.FieldValidationStrict) // unknown fields are errors
	for _, name := range []string{"rbac.yaml", "service.yaml", "deployment.yaml"} {
		applyManifest(t, c, name)
	}
}

// applyManifest creates the objects of manifests/policygen/<name>.
func applyManifest(t *testing.T, c client.Client, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.CRDDir(), "..", "policygen", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var u unstructured.Unstructured
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(context.Background(), &u); err != nil {
			t.Errorf("%s: %s %s refused: %v", name, u.GetKind(), u.GetName(), err)
		}
	}
}
