//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
)

// TestSpoofedOwner: a namespace user's bare pod that names the client Deployment's ReplicaSet as its
// controller, with a UID that is not the ReplicaSet's, is its own workload. Its sidecar is served a
// policy of its own (Pod/spoof), its verdict lines say so, what it does is learned into that policy,
// and the client's policy learns nothing from it.
//
// On a real cluster the garbage collector drops a reference to an owner that does not exist with its
// UID, and deletes a pod left with no owner: her pod also names a ConfigMap of hers as a plain owner,
// so that it lives on (as the bare pod it then plainly is) and the outcome can be read.
func TestSpoofedOwner(t *testing.T) {
	requirePodwall(t)
	ctx := context.Background()
	ns := namespace(t, map[string]string{injectLabel: "enabled"})
	deployment(t, ns, "server", corev1.PodSpec{Containers: []corev1.Container{workloadContainer("server", "serve", "-addr", ":8080,:9090")}})
	svc := service(t, ns, "server", 8080)
	deployment(t, ns, "client", corev1.PodSpec{Containers: []corev1.Container{
		workloadContainer("client", "connect", "-url", fmt.Sprintf("http://%s:8080/", svc.Spec.ClusterIP))}})
	server, client := podOf(t, ns, "server"), podOf(t, ns, "client")
	learn(t, ns)

	mallory := namespaceUser(t, ns, "mallory", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}})
	// She reads the ReplicaSet's name off the client's pod, and forges the UID.
	rs := metav1.GetControllerOf(client)
	if rs == nil {
		t.Fatalf("client pod %s has no controller", client.Name)
	}
	cm, err := mallory.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "spoof-owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("mallory creates her ConfigMap: %v", err)
	}
	unlisted := netip.AddrPortFrom(netip.MustParseAddr(server.Status.PodIP), 9090)
	spec := corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{
		workloadContainer("spoof", "connect", "-url", "http://"+unlisted.String()+"/")}}
	uid := []byte(rs.UID)
	uid[0] ^= 1 // another character
	forged := metav1.OwnerReference{APIVersion: rs.APIVersion, Kind: rs.Kind, Name: rs.Name, UID: types.UID(uid), Controller: ptr.To(true)}
	spoof, err := mallory.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "spoof", Labels: map[string]string{"e2e": "spoof"}, OwnerReferences: []metav1.OwnerReference{
			forged, {APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}}},
		Spec: spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("mallory creates her pod: %v", err)
	}
	if ref := metav1.GetControllerOf(spoof); ref == nil || ref.Name != forged.Name || ref.UID != forged.UID {
		t.Fatalf("the API server stored controller %+v, want her forged %+v", ref, forged)
	}
	runningPod(t, ns, "spoof")

	// Her sidecar runs the policy policygen made for her pod, and says so in its lines.
	testutil.Await(t, "spoof's verdict lines for "+unlisted.String(), 2*time.Minute, func() error {
		for _, l := range verdictLines(t, ns, "spoof", time.Time{}) {
			if l.Dst == unlisted && l.Workload == "Pod/spoof" {
				return nil
			}
		}
		return errors.New("no verdict line naming Pod/spoof")
	})
	for _, l := range verdictLines(t, ns, "spoof", time.Time{}) {
		if l.Workload != "Pod/spoof" && l.Dst == unlisted {
			t.Errorf("a verdict line of her connection names %q", l.Workload)
		}
	}
	// What she does is learned into her own policy.
	testutil.Await(t, "pod-spoof learns her connection", 2*time.Minute, func() error {
		p, err := workloadPolicy(t, ns, "pod-spoof")
		if err != nil {
			return err
		}
		if p.Spec.Workload.Kind != "Pod" || p.Spec.Workload.Name != "spoof" {
			return fmt.Errorf("pod-spoof is the policy of %+v", p.Spec.Workload)
		}
		for _, r := range p.Spec.Egress {
			if r.Origin == policy.OriginLearned && hasPort(r, 9090) {
				return nil
			}
		}
		return fmt.Errorf("egress %+v: want a learned rule to port 9090", p.Spec.Egress)
	})
	// ... and never into the client's, whose policy names no port 9090.
	p, err := workloadPolicy(t, ns, "deployment-client")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append(p.Spec.Egress, p.Spec.Ingress...) {
		if hasPort(r, 9090) {
			t.Errorf("the client's policy has a rule from her pod: %+v", r)
		}
	}
	if now, err := env.Client.CoreV1().Pods(ns).Get(ctx, "spoof", metav1.GetOptions{}); err == nil {
		t.Logf("her pod's controller reference now: %+v (the garbage collector drops a forged one)", metav1.GetControllerOf(now))
	}
}
