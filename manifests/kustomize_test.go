// Package manifests_test checks the install YAML as kubectl builds it: `kubectl apply -k manifests/`
// and the cert-manager overlay.
package manifests_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"podwall.io/podwall/internal/testenv"
)

// TestKustomizations builds manifests/ and manifests/overlays/cert-manager with kubectl and has a
// real API server validate every object, strictly: the base is created, and the overlay's changes of
// it are dry-run (cert-manager's and trust-manager's kinds are not known to this API server). The overlay must turn
// both servers to the certificates cert-manager keeps.
func TestKustomizations(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	direct, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := client.WithFieldValidation(direct, metav1.FieldValidationStrict)
	ctx := context.Background()

	base := build(t, "")
	for _, u := range base {
		if err := c.Create(ctx, u); err != nil {
			t.Errorf("manifests/: %s %s refused: %v", u.GetKind(), u.GetName(), err)
		}
	}

	overlay := build(t, filepath.Join("overlays", "cert-manager"))
	var certManager []string
	deployments := map[string]appsv1.Deployment{}
	for _, u := range overlay {
		if g := u.GroupVersionKind().Group; strings.HasSuffix(g, "cert-manager.io") {
			certManager = append(certManager, u.GetKind()+"/"+u.GetName())
			continue
		}
		if u.GetKind() == "MutatingWebhookConfiguration" && u.GetAnnotations()["cert-manager.io/inject-ca-from"] != "podwall-system/podwall-injector" {
			t.Errorf("overlay: webhook configuration lacks cert-manager's inject-ca-from annotation")
		}
		if u.GetKind() == "Deployment" {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
				t.Fatal(err)
			}
			deployments[d.Name] = d
		}
		// The base's object, changed as the overlay says.
		current := &unstructured.Unstructured{}
		current.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), current); err != nil {
			t.Errorf("overlay: %s %s is not in manifests/: %v", u.GetKind(), u.GetName(), err)
			continue
		}
		u.SetResourceVersion(current.GetResourceVersion())
		if err := c.Update(ctx, u, client.DryRunAll); err != nil {
			t.Errorf("overlay: %s %s refused: %v", u.GetKind(), u.GetName(), err)
		}
	}
	slices.Sort(certManager)
	want := []string{"Bundle/podwall-policygen-ca", "Certificate/podwall-ca", "Certificate/podwall-injector",
		"Certificate/podwall-policygen", "Issuer/podwall-ca", "Issuer/podwall-selfsigned"}
	if !slices.Equal(certManager, want) {
		t.Errorf("overlay's cert-manager objects = %v, want %v", certManager, want)
	}
	for name, secret := range map[string]string{"podwall-policygen": "podwall-policygen-tls", "podwall-injector": "podwall-injector-tls"} {
		if err := external(deployments[name], secret); err != nil {
			t.Errorf("overlay: deployment %s: %v", name, err)
		}
	}
}

// external checks that d's server reads its certificate from secret, mounted where cert-mode=external
// looks.
func external(d appsv1.Deployment, secret string) error {
	if len(d.Spec.Template.Spec.Containers) != 1 {
		return errors.New("want one container")
	}
	ct := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(ct.Env, corev1.EnvVar{Name: "PODWALL_CERT_MODE", Value: "external"}) {
		return errors.New("no PODWALL_CERT_MODE=external")
	}
	var volume string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret {
			volume = v.Name
		}
	}
	for _, m := range ct.VolumeMounts {
		if m.Name == volume && m.MountPath == "/var/run/"+d.Name+"/certs" {
			return nil
		}
	}
	return errors.New("Secret " + secret + " is not mounted at the cert-dir default")
}

// build runs kubectl kustomize on manifests/<dir> and decodes the objects.
func build(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	path := filepath.Join(testenv.RepoRoot(), "manifests", dir)
	out, err := exec.Command(filepath.Join(testenv.Assets(t), "kubectl"), "kustomize", path).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", path, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, u)
	}
}

// TestImagesPinned: manifests/ and the overlay run podwall's images at the one version that
// manifests/version pins (what `make release-manifests` sets), pulled IfNotPresent, and the injector
// is left to inject the sidecar of its own version.
func TestImagesPinned(t *testing.T) {
	var component struct {
		Images []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		} `json:"images"`
	}
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "manifests", "version", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal(data, &component); err != nil || len(component.Images) == 0 {
		t.Fatalf("manifests/version: %v, images %v", err, component.Images)
	}
	tag := component.Images[0].NewTag
	for _, dir := range []string{"", filepath.Join("overlays", "cert-manager")} {
		for _, u := range build(t, dir) {
			if u.GetKind() != "Deployment" {
				continue
			}
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
				t.Fatal(err)
			}
			for _, c := range d.Spec.Template.Spec.Containers {
				want := "podwall/" + strings.TrimPrefix(d.Name, "podwall-") + ":" + tag
				if c.Image != want || c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("manifests/%s: %s runs %s (%s), want %s (IfNotPresent)", dir, d.Name, c.Image, c.ImagePullPolicy, want)
				}
				if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PODWALL_SIDECAR_IMAGE" }) {
					t.Errorf("manifests/%s: %s sets PODWALL_SIDECAR_IMAGE: the injector's own version is the default", dir, d.Name)
				}
			}
		}
	}
	for _, img := range component.Images {
		if img.NewTag != tag {
			t.Errorf("manifests/version pins %s at %s, want every image at %s", img.Name, img.NewTag, tag)
		}
	}
}
