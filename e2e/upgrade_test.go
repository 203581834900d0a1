//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/e2e/internal/stack"
	"podwall.io/podwall/internal/testutil"
)

// TestUpgrade walks the README's upgrade path: podwall installed at a previous version (this tree's
// code stamped and tagged "<version>-prev", there being no earlier release to install), a workload
// injected by it with a user rule in its WorkloadPolicy, then `kubectl apply -k manifests/` of the
// tree's version. The policy and its rules survive unchanged; the running pod keeps its old sidecar,
// which the policy's status reports as outdated (and `kubectl get wp` in its Outdated column) until
// `kubectl rollout restart` gives the workload the new sidecar.
//
// It leaves podwall installed at the tree's version, as requirePodwall did, for the tests that run
// after it, and reinstalls that version if it fails midway.
func TestUpgrade(t *testing.T) {
	requirePodwall(t)
	ctx := context.Background()
	v, err := stack.Version(ctx, env.root)
	if err != nil {
		t.Fatal(err)
	}
	prev := v + "-prev"
	missing, err := stack.LoadPodwall(ctx, env.Cluster, env.root, prev)
	if err != nil || len(missing) > 0 {
		t.Fatalf("build podwall's images at %s: %v %v", prev, err, missing)
	}
	t.Cleanup(func() {
		if t.Failed() {
			reinstall(t)
		}
	})
	deployAt(t, prev)

	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "app", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("app", "serve", "-addr", ":8080")}})
	old := podOf(t, ns, "app")
	if img, want := old.Spec.InitContainers[0].Image, stack.PodwallImage("podwall-sidecar", prev); img != want {
		t.Fatalf("sidecar injected by the previous version: %s, want %s", img, want)
	}
	const wp = "deployment-app"
	before := addUserRule(t, ns, wp)

	deployAt(t, v)

	t.Run("the WorkloadPolicy and its rules survive unchanged", func(t *testing.T) {
		after, err := workloadPolicy(t, ns, wp)
		if err != nil {
			t.Fatal(err)
		}
		if after.Spec.Mode != before.Spec.Mode || !reflect.DeepEqual(after.Spec.Workload, before.Spec.Workload) {
			t.Errorf("spec after the upgrade: mode %s, workload %+v; before: %s, %+v", after.Spec.Mode, after.Spec.Workload, before.Spec.Mode, before.Spec.Workload)
		}
		// Rules may be learned meanwhile; none of those before may change or go.
		for list, rules := range map[string][2][]v1alpha1.Rule{"egress": {before.Spec.Egress, after.Spec.Egress}, "ingress": {before.Spec.Ingress, after.Spec.Ingress}} {
			for _, r := range rules[0] {
				if !hasRule(rules[1], r) {
					t.Errorf("%s rule %+v gone or changed after the upgrade: %+v", list, r, rules[1])
				}
			}
		}
	})
	t.Run("the running pod keeps its old sidecar, reported outdated", func(t *testing.T) {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, old.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := p.Status.InitContainerStatuses[0].Image; !strings.HasSuffix(img, ":"+prev) || p.Spec.InitContainers[0].Image != old.Spec.InitContainers[0].Image {
			t.Errorf("the running pod's sidecar runs %s (spec %s), want the previous version %s", img, p.Spec.InitContainers[0].Image, prev)
		}
		// Each sidecar may be counted by both policygen replicas.
		testutil.Await(t, "the policy reports the sidecar of "+prev+" as outdated", 2*time.Minute, func() error {
			p, err := workloadPolicy(t, ns, wp)
			if err != nil {
				return err
			}
			if p.Status.OutdatedSidecars == 0 || !hasVersion(p.Status.SidecarVersions, prev) {
				return fmt.Errorf("sidecar versions %+v, %d outdated; want %s listed and outdated", p.Status.SidecarVersions, p.Status.OutdatedSidecars, prev)
			}
			return nil
		})
		out := kubectl(t, "-n", ns, "get", "wp", wp)
		if n, err := column(out, "OUTDATED"); err != nil || n == 0 {
			t.Errorf("kubectl get wp: Outdated %d (%v), want > 0:\n%s", n, err, out)
		}
	})
	t.Run("a rollout restart gives the workload the new sidecar", func(t *testing.T) {
		kubectl(t, "-n", ns, "rollout", "restart", "deployment/app")
		kubectl(t, "-n", ns, "rollout", "status", "deployment/app", "--timeout=2m")
		p := podOf(t, ns, "app", old.Name)
		if img, want := p.Spec.InitContainers[0].Image, stack.PodwallImage("podwall-sidecar", v); img != want {
			t.Errorf("sidecar after the restart: %s, want %s", img, want)
		}
		// policygen counts a sidecar for a grace after its last poll (the longest long-poll, 2m, and
		// a status interval): one between two polls looks the same as one that is gone.
		testutil.Await(t, "no outdated sidecar", 4*time.Minute, func() error {
			p, err := workloadPolicy(t, ns, wp)
			if err != nil {
				return err
			}
			if p.Status.OutdatedSidecars != 0 || hasVersion(p.Status.SidecarVersions, prev) || !hasVersion(p.Status.SidecarVersions, v) {
				return fmt.Errorf("sidecar versions %+v, %d outdated; want only %s, none outdated", p.Status.SidecarVersions, p.Status.OutdatedSidecars, v)
			}
			return nil
		})
	})
}

// deployAt applies podwall's manifests at version v and waits for the rollout.
func deployAt(t *testing.T, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := stack.DeployVersion(ctx, env.Cluster, env.root, v); err != nil {
		out, _ := kubectlOut("-n", "podwall-system", "get", "pods,events", "-o", "wide")
		t.Fatalf("deploy podwall %s: %v\n%s", v, err, out)
	}
}

// addUserRule adds a user's egress rule to the policy, as a user would with kubectl, and returns the
// policy once it holds it.
func addUserRule(t *testing.T, ns, name string) *v1alpha1.WorkloadPolicy {
	t.Helper()
	rule := v1alpha1.Rule{Name: "upgrade-user-rule", Origin: policy.OriginUser,
		Peers: []v1alpha1.Peer{{CIDR: "192.0.2.0/24"}}, Ports: []v1alpha1.Port{{Protocol: policy.TCP, Port: 443}}}
	var p *v1alpha1.WorkloadPolicy
	testutil.Await(t, "the policy with the user's rule", time.Minute, func() error {
		var err error
		if p, err = workloadPolicy(t, ns, name); err != nil {
			return err
		}
		for _, r := range p.Spec.Egress {
			if r.Name == rule.Name {
				return nil
			}
		}
		op := map[string]any{"op": "add", "path": "/spec/egress/-", "value": rule}
		if len(p.Spec.Egress) == 0 {
			op = map[string]any{"op": "add", "path": "/spec/egress", "value": []v1alpha1.Rule{rule}}
		}
		patch, err := json.Marshal([]any{op})
		if err != nil {
			return err
		}
		if out, err := kubectlOut("-n", ns, "patch", "workloadpolicy", name, "--type", "json", "-p", string(patch)); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return errors.New("patched; reading it back")
	})
	return p
}

func hasRule(rules []v1alpha1.Rule, r v1alpha1.Rule) bool {
	for _, x := range rules {
		if reflect.DeepEqual(x, r) {
			return true
		}
	}
	return false
}

func hasVersion(vs []v1alpha1.SidecarVersion, v string) bool {
	for _, x := range vs {
		if x.Version == v && x.Count > 0 {
			return true
		}
	}
	return false
}

// column reads a number from the one row of kubectl's table output, in the column headed name
// (kubectl aligns each column's cells with its header).
func column(out, name string) (int, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		return 0, fmt.Errorf("want a header and one row")
	}
	head, row := lines[0], lines[1]
	i := strings.Index(head, name)
	if i < 0 || i >= len(row) {
		return 0, fmt.Errorf("no column %s", name)
	}
	cell := strings.Fields(row[i:])
	if len(cell) == 0 {
		return 0, fmt.Errorf("column %s is empty", name)
	}
	return strconv.Atoi(cell[0])
}
