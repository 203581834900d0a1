package pgtest

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cluster creates objects the way the controllers a test API server lacks would: a Deployment's
// ReplicaSet and pods with owner references, pod IPs in the status, service accounts and their tokens.
type Cluster struct {
	T   testing.TB
	C   client.Client
	Cfg *rest.Config
}

// Create creates obj or fails the test.
func (k Cluster) Create(obj client.Object) client.Object {
	k.T.Helper()
	if err := k.C.Create(context.Background(), obj); err != nil {
		k.T.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	return obj
}

func controlledBy(owner client.Object, kind string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: &yes}}
}

// Deployment creates a Deployment labelled app=name with one ReplicaSet and one running pod per IP,
// running as service account sa (created if missing; "" for default).
func (k Cluster) Deployment(ns, name, sa string, ips ...string) []*corev1.Pod {
	k.T.Helper()
	if sa != "" {
		err := k.C.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
		if err != nil && !isExists(err) {
			k.T.Fatal(err)
		}
	}
	labels := map[string]string{"app": name}
	tpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	d := k.Create(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}})
	rs := k.Create(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-5d8f", Labels: labels, OwnerReferences: controlledBy(d, "Deployment")},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tpl}})
	var pods []*corev1.Pod
	for i, ip := range ips {
		pod := k.Create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-5d8f-%d", name, i),
			Labels: labels, OwnerReferences: controlledBy(rs, "ReplicaSet")}, Spec: tpl.Spec}).(*corev1.Pod)
		k.SetIP(pod, ip)
		pods = append(pods, pod)
	}
	return pods
}

// PodCreator returns a client acting as user, a namespace user who may create pods in ns and nothing
// else: the attacker of the identity tests, who writes whatever ownerReferences she likes.
func (k Cluster) PodCreator(ns, user string) client.Client {
	k.T.Helper()
	return k.NamespaceUser(ns, user, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}})
}

func isExists(err error) bool {
	return err != nil && client.IgnoreAlreadyExists(err) == nil
}

// SetIP marks the pod running with ip.
func (k Cluster) SetIP(pod *corev1.Pod, ip string) {
	k.T.Helper()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if err := k.C.Status().Update(context.Background(), pod); err != nil {
		k.T.Fatalf("set pod ip: %v", err)
	}
}

// Token requests a real token for the pod's service account, bound to the pod, with the audience.
func (k Cluster) Token(pod *corev1.Pod, audience string) string {
	k.T.Helper()
	token, err := k.RequestToken(pod, audience)
	if err != nil {
		k.T.Fatal(err)
	}
	return token
}

// RequestToken is Token returning its error, for use off the test's goroutine.
func (k Cluster) RequestToken(pod *corev1.Pod, audience string) (string, error) {
	cs, err := kubernetes.NewForConfig(k.Cfg)
	if err != nil {
		return "", err
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(context.Background(), sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp,
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return tr.Status.Token, nil
}

// NamespaceUser binds user to a Role in ns holding exactly rules and returns a client acting as them
// (impersonated): a namespace user, not cluster-admin, the way a tenant attack is made.
func (k Cluster) NamespaceUser(ns, user string, rules ...rbacv1.PolicyRule) client.Client {
	k.T.Helper()
	k.Create(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user}, Rules: rules})
	k.Create(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}}})
	cfg := rest.CopyConfig(k.Cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		k.T.Fatal(err)
	}
	return c
}
