// Package manifests_test checks the install YAML as kubectl builds it: `kubectl apply -k manifests/`,
// its overlays, and `kubectl delete -k manifests/`.
package manifests_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	sigsyaml "sigs.k8s.io/yaml"

	"podwall.io/podwall/internal/testenv"
)

// TestKustomizations builds manifests/ and its overlays (cert-manager, prometheus, networkpolicy-sync) with kubectl and
// has a real API server validate every object, strictly: the base is created, and each overlay's
// changes of it are dry-run (cert-manager's, trust-manager's and the Prometheus Operator's deleted are
// not known to this API server). The cert-manager overlay must turn both servers to the certificates
// cert-manager keeps; the prometheus overlay must scrape both servers' metrics ports. Then the
// uninstall command deletes the base, admission objects first. The networkpolicy-sync overlay must
// turn the sync on and add the RBAC it needs (policygen's tests run the sync under that RBAC).
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

	foreign, deployments := overlay(t, c, "cert-manager", "cert-manager.io")
	var certManager []string
	for _, u := range foreign {
		certManager = append(certManager, u.GetKind()+"/"+u.GetName())
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

	monitors, _ := overlay(t, c, "prometheus", "monitoring.coreos.com")
	for _, svc := range []string{"podwall-injector", "podwall-policygen"} {
		if err := scraped(ctx, c, monitors, svc); err != nil {
			t.Errorf("prometheus overlay: Service %s: %v", svc, err)
		}
	}

	_, deployments = overlay(t, c, "networkpolicy-sync", "none",
		"ClusterRole/podwall-policygen-networkpolicies", "ClusterRoleBinding/podwall-policygen-networkpolicies")
	if ct := deployments["podwall-policygen"].Spec.Template.Spec.Containers; len(ct) != 1 ||
		!slices.Contains(ct[0].Env, corev1.EnvVar{Name: "PODWALL_NETWORKPOLICY_SYNC", Value: "true"}) {
		t.Errorf("networkpolicy-sync overlay: policygen's containers %+v do not turn the sync on", ct)
	}

	t.Run("kubectl delete -k removes the admission objects first", func(t *testing.T) {
		testDeleteOrder(t, env)
	})
}

// overlay builds manifests/overlays/<name> and has the API server dry-run its changes of the base's
// objects (created before): each must be in manifests/ and valid as changed. It returns the overlay's
// objects of the API group ending in group, which this API server does not know, and its Deployments.
// The objects named in added ("Kind/name") are the overlay's own: they are dry-run created instead.
// The MutatingWebhookConfiguration must come first, as in manifests/ (testDeleteOrder).
func overlay(t *testing.T, c client.Client, name, group string, added ...string) ([]*unstructured.Unstructured, map[string]appsv1.Deployment) {
	t.Helper()
	objs := build(t, filepath.Join("overlays", name))
	if len(objs) == 0 || objs[0].GetKind() != "MutatingWebhookConfiguration" {
		t.Errorf("overlay %s: the MutatingWebhookConfiguration is not first: it must be deleted first (sortOptions)", name)
	}
	var foreign []*unstructured.Unstructured
	deployments := map[string]appsv1.Deployment{}
	for _, u := range objs {
		if strings.HasSuffix(u.GroupVersionKind().Group, group) {
			foreign = append(foreign, u)
			continue
		}
		if u.GetKind() == "MutatingWebhookConfiguration" && name == "cert-manager" && u.GetAnnotations()["cert-manager.io/inject-ca-from"] != "podwall-system/podwall-injector" {
			t.Errorf("overlay: webhook configuration lacks cert-manager's inject-ca-from annotation")
		}
		if u.GetKind() == "Deployment" {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
				t.Fatal(err)
			}
			deployments[d.Name] = d
		}
		if slices.Contains(added, u.GetKind()+"/"+u.GetName()) {
			if err := c.Create(context.Background(), u, client.DryRunAll); err != nil {
				t.Errorf("overlay %s: %s %s refused: %v", name, u.GetKind(), u.GetName(), err)
			}
			continue
		}
		// The base's object, changed as the overlay says.
		current := &unstructured.Unstructured{}
		current.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(u), current); err != nil {
			t.Errorf("overlay %s: %s %s is not in manifests/: %v", name, u.GetKind(), u.GetName(), err)
			continue
		}
		u.SetResourceVersion(current.GetResourceVersion())
		if err := c.Update(context.Background(), u, client.DryRunAll); err != nil {
			t.Errorf("overlay %s: %s %s refused: %v", name, u.GetKind(), u.GetName(), err)
		}
	}
	return foreign, deployments
}

// scraped checks that Service name of podwall-system carries the prometheus.io annotations for its
// port named metrics, and that one of monitors (ServiceMonitors) selects it by its labels and port.
func scraped(ctx context.Context, c client.Client, monitors []*unstructured.Unstructured, name string) error {
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "podwall-system", Name: name}, &svc); err != nil {
		return err
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" })
	if i < 0 {
		return errors.New("no port named metrics")
	}
	if a := svc.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(svc.Spec.Ports[i].Port)) {
		return fmt.Errorf("annotations %v do not scrape the metrics port %d", a, svc.Spec.Ports[i].Port)
	}
	for _, m := range monitors {
		selector, _, _ := unstructured.NestedStringMap(m.Object, "spec", "selector", "matchLabels")
		endpoints, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
		if m.GetKind() != "ServiceMonitor" || m.GetNamespace() != svc.Namespace || len(selector) == 0 || len(endpoints) != 1 {
			continue
		}
		matches := true
		for k, v := range selector {
			matches = matches && svc.Labels[k] == v
		}
		if port, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "port"); matches && port == "metrics" {
			return nil
		}
	}
	return errors.New("no ServiceMonitor selects it with port metrics")
}

// testDeleteOrder runs the uninstall command, `kubectl delete -k manifests/`, against the API server
// holding the base and checks what kubectl deleted first: the webhook configuration and the lifecycle
// policies, before the namespace whose deletion stops the injector. (--wait=false: this API server runs
// no namespace controller, so podwall-system would stay Terminating; make e2e runs the command whole.)
func testDeleteOrder(t *testing.T, env *envtest.Environment) {
	admin, err := env.AddUser(envtest.User{Name: "uninstaller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubectl, err := admin.Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	kubectl.Path = filepath.Join(testenv.Assets(t), "kubectl")
	stdout, stderr, err := kubectl.Run("delete", "-k", filepath.Join(testenv.RepoRoot(), "manifests"), "--wait=false", "-o", "name")
	if err != nil {
		errOut, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl delete -k manifests/: %v: %s", err, errOut)
	}
	out, _ := io.ReadAll(stdout)
	deleted := strings.Fields(string(out))
	first := []string{"mutatingwebhookconfiguration.admissionregistration.k8s.io/podwall-injector",
		"validatingadmissionpolicybinding.admissionregistration.k8s.io/podwall-exec",
		"validatingadmissionpolicybinding.admissionregistration.k8s.io/podwall-injected-pods",
		"validatingadmissionpolicy.admissionregistration.k8s.io/podwall-exec",
		"validatingadmissionpolicy.admissionregistration.k8s.io/podwall-injected-pods",
		"namespace/podwall-system"}
	if len(deleted) < len(first) || !slices.Equal(deleted[:len(first)], first) {
		t.Errorf("kubectl deleted, in this order:\n%s\nwant first: %v", out, first)
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

// TestImagesPinned: manifests/ and the overlays that change Deployments run podwall's images at the
// one version that manifests/version pins (what `make release-manifests` sets), pulled IfNotPresent,
// and the injector is left to inject the sidecar of its own version.
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
	for _, dir := range []string{"", filepath.Join("overlays", "cert-manager"), filepath.Join("overlays", "networkpolicy-sync")} {
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
