package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/scheme"
)

// TestPolicyCommands runs status, promote and export against a real API server holding two
// policies whose status says what the evidence is, as policygen would write it: web, learned through
// a complete window with nothing to deny, and api, with a silent pod and two flows Protect would deny.
func TestPolicyCommands(t *testing.T) {
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{testenv.CRDDir()}})
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	create := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	since := metav1.NewTime(time.Now().Add(-25 * time.Hour).Truncate(time.Second))
	for name, mode := range map[string]policy.Mode{"web": policy.Learn, "api": policy.Monitor} {
		labels := map[string]string{"app": name}
		create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: name}}}}}})
		wp := &v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deployment-" + name},
			Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: name}, Mode: mode,
				Ingress: []v1.Rule{{Name: "m-svc", Origin: policy.OriginManifest, Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}},
					Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}}}}
		create(wp)
		wp.Status.Sidecars, wp.Status.SidecarsInSync = 3, 3
		wp.Status.Coverage = &v1.Coverage{Since: since, Pods: 3, Reported: 3, ObservedHours: 25, Flows: 1200, Complete: true}
		if name == "api" {
			wp.Status.SidecarsInSync, wp.Status.OutdatedSidecars, wp.Status.WeakenedSidecars = 2, 1, 1
			wp.Status.Coverage = &v1.Coverage{Since: since, Pods: 3, Reported: 2, ObservedHours: 20, GapHours: 5, Flows: 80}
			wp.Status.WouldDenyFlows = 2
			wp.Status.WouldDeny = []v1.FlowSummary{
				{Direction: policy.Egress, Peer: "cidr:203.0.113.7/32", Address: "203.0.113.7", Protocol: policy.TCP, Port: 443, Count: 4, LastSeen: since},
				{Direction: policy.Ingress, Peer: "workload:shop/Deployment/batch", Protocol: policy.TCP, Port: 8080, Count: 1, LastSeen: since}}
		}
		if err := c.Status().Update(ctx, wp); err != nil {
			t.Fatalf("status of %s: %v", name, err)
		}
	}
	file := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(file, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
		cmd.SetArgs(append([]string{"--kubeconfig", file, "-n", "shop"}, args...))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	mode := func(name string) policy.Mode {
		t.Helper()
		var wp v1.WorkloadPolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &wp); err != nil {
			t.Fatal(err)
		}
		return wp.Spec.Mode
	}

	t.Run("status", func(t *testing.T) {
		out, err := run("status")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "WORKLOAD") {
			t.Fatalf("status:\n%s\nwant a header and two rows", out)
		}
		for _, want := range [][]string{
			{"Deployment/api", "Monitor", "3", "2", "1", "1", "2/3 pods 20h 5h gaps incomplete", "2", "<none>"},
			{"Deployment/web", "Learn", "3", "3", "0", "0", "3/3 pods 25h complete", "0", "<none>"},
		} {
			row := lines[1]
			if strings.HasPrefix(want[0], "Deployment/web") {
				row = lines[2]
			}
			if fields := strings.Join(strings.Fields(row), " "); !strings.HasPrefix(fields, strings.Join(want, " ")) {
				t.Errorf("row %q, want it to begin %q", fields, strings.Join(want, " "))
			}
		}
		out, err = run("status", "-o", "json", "deployment/api")
		if err != nil {
			t.Fatal(err)
		}
		var rows []policyStatus
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("-o json: %v\n%s", err, out)
		}
		if len(rows) != 1 || rows[0].Policy != "deployment-api" || rows[0].WouldDeny != 2 || rows[0].Coverage.Complete {
			t.Errorf("-o json: %+v, want api's row alone", rows)
		}
		if _, err := run("status", "-o", "wide"); err == nil || !strings.Contains(err.Error(), "want json or yaml") {
			t.Errorf("-o wide: %v, want it refused", err)
		}
		_, err = run("status", "statefulsets/web")
		wantError(t, err, "podwall has policies for the kinds", "not statefulsets")
		_, err = run("status", "deployment/nothing")
		wantError(t, err, "namespace shop has no WorkloadPolicy deployment-nothing")
	})

	t.Run("promote refuses without evidence", func(t *testing.T) {
		out, err := run("promote", "Deployment/api")
		wantError(t, err, "not promoting shop/deployment-api to Protect", "coverage incomplete (2 of 3 pods reported, 5 gap hours)",
			"2 flows would be denied", "--force")
		for _, want := range []string{"Monitor → Protect", "2 of 3 pods reported", "Would deny: 2 flows",
			"egress cidr:203.0.113.7/32 (203.0.113.7) port 443/TCP ×4", "ingress workload:shop/Deployment/batch port 8080/TCP ×1"} {
			if !strings.Contains(out, want) {
				t.Errorf("evidence printed:\n%s\nsays no %q", out, want)
			}
		}
		if m := mode("deployment-api"); m != policy.Monitor {
			t.Errorf("api is in %s after a refused promotion, want Monitor", m)
		}
	})

	t.Run("promote with evidence", func(t *testing.T) {
		out, err := run("promote", "deployment-web")
		if err != nil || !strings.Contains(out, "workloadpolicy.podwall.io/deployment-web promoted to Monitor") {
			t.Fatalf("promote web: %v\n%s", err, out)
		}
		if m := mode("deployment-web"); m != policy.Monitor {
			t.Errorf("web is in %s, want Monitor", m)
		}
	})

	t.Run("promote --force", func(t *testing.T) {
		if out, err := run("promote", "deployment/api", "--force"); err != nil || !strings.Contains(out, "promoted to Protect") {
			t.Fatalf("promote api --force: %v\n%s", err, out)
		}
		if m := mode("deployment-api"); m != policy.Protect {
			t.Errorf("api is in %s, want Protect", m)
		}
		_, err := run("promote", "deployment/api", "--force")
		wantError(t, err, "is in Protect already")
	})

	t.Run("promote needs patch", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(env.Config)
		grant(t, cs, "shop", "carol", rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{"podwall.io"}, Resources: []string{"workloadpolicies"}})
		testutil.Eventually(t, 10*time.Second, func() error {
			_, err := run("--as", "carol", "promote", "deployment/web", "--force")
			switch {
			case err == nil:
				t.Fatal("carol, who may not patch, promoted web")
			case !strings.Contains(err.Error(), "kubectl auth can-i patch workloadpolicies.podwall.io/deployment-web -n shop"):
				return err // RBAC has not seen her get yet
			}
			return nil
		})
		if m := mode("deployment-web"); m != policy.Monitor {
			t.Errorf("web is in %s after carol's refused promotion, want Monitor", m)
		}
	})

	t.Run("export", func(t *testing.T) {
		out, err := run("export", "deployment/web")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"# NetworkPolicy exported by podwall from WorkloadPolicy shop/deployment-web.", "kind: NetworkPolicy",
			"app: web", "cidr: 10.0.0.0/8", "port: 8080"} {
			if !strings.Contains(out, want) {
				t.Errorf("export:\n%s\nsays no %q", out, want)
			}
		}
	})
}
