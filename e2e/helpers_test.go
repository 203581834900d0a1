//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/e2e/internal/stack"
	"podwall.io/podwall/internal/testutil"
)

// namespace creates a namespace with the given labels for one test and deletes it afterwards.
func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns, err := env.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, ns.Name)
		}
		env.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// dumpNamespace logs what a failed test leaves: pods, events and every container's log, and the
// logs of podwall's own services.
func dumpNamespace(t *testing.T, ns string) {
	for _, args := range [][]string{
		{"-n", ns, "get", "pods,events", "-o", "wide"},
		{"-n", ns, "logs", "--all-containers", "--prefix", "-l", "e2e", "--tail", "60"},
		{"-n", "podwall-system", "logs", "--all-containers", "--prefix", "-l", "app.kubernetes.io/name in (podwall-injector,podwall-policygen)", "--tail", "60"},
	} {
		out, _ := kubectlOut(args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// kubectl runs kubectl against the cluster and returns its output, failing the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlOut(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlOut(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", env.Kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

// runningPod waits until the pod runs with every container ready and returns it.
func runningPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	testutil.Await(t, "pod "+ns+"/"+name+" running and ready", 2*time.Minute, func() error {
		var err error
		pod, err = env.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", pod.Status.Phase)
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
				return fmt.Errorf("not ready: %s", c.Message)
			}
		}
		return nil
	})
	return pod
}

// waitLog waits until `kubectl logs` of the container shows a line containing every one of parts, and
// returns that line.
func waitLog(t *testing.T, ns, pod, container string, timeout time.Duration, parts ...string) string {
	t.Helper()
	var found string
	testutil.Await(t, fmt.Sprintf("log of %s/%s -c %s shows %q", ns, pod, container, parts), timeout, func() error {
		out, err := kubectlOut("-n", ns, "logs", pod, "-c", container)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if containsAll(line, parts) {
				found = line
				return nil
			}
		}
		return fmt.Errorf("no such line in %d bytes", len(out))
	})
	return found
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// workloadContainer runs the test workload's subcommand.
func workloadContainer(name string, args ...string) corev1.Container {
	return corev1.Container{Name: name, Image: stack.WorkloadImage, ImagePullPolicy: corev1.PullIfNotPresent, Args: args}
}

// createPod creates a pod labelled e2e=<name> and waits until it runs.
func createPod(t *testing.T, ns, name string, spec corev1.PodSpec) *corev1.Pod {
	t.Helper()
	spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
	_, err := env.Client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"e2e": name}},
		Spec:       spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return runningPod(t, ns, name)
}

// service exposes the pods labelled e2e=<name> on port, with a cluster IP of each family (IPv4, the
// primary one, in ClusterIP; ClusterIPs lists both).
func service(t *testing.T, ns, name string, port int32) *corev1.Service {
	t.Helper()
	return createService(t, ns, name, port, "")
}

// headless creates a headless Service (no cluster IP: the cluster DNS answers with the addresses of
// the pods labelled e2e=<name>, of both families).
func headless(t *testing.T, ns, name string, port int32) {
	t.Helper()
	createService(t, ns, name, port, corev1.ClusterIPNone)
}

// createService creates the dual-stack Service of service and headless, with clusterIP ("": the API
// server assigns them).
func createService(t *testing.T, ns, name string, port int32, clusterIP string) *corev1.Service {
	t.Helper()
	svc, err := env.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"e2e": name}, ClusterIP: clusterIP,
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Ports:          []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return svc
}

// podIPs lists the pod's addresses, one per family.
func podIPs(pod *corev1.Pod) []string {
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return ips
}

// ipv6Of returns the one IPv6 address among addrs (a pod's or a Service's, on the dual-stack cluster).
func ipv6Of(t *testing.T, addrs []string) netip.Addr {
	t.Helper()
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() && !a.Is4In6() {
			return a
		}
	}
	t.Fatalf("no IPv6 address among %v", addrs)
	return netip.Addr{}
}

// namespaceUser gives user a Role with rules in ns, so that `kubectl --as <user>` acts as a namespace
// user would, and returns a client acting as user. It checks that user is no administrator.
func namespaceUser(t *testing.T, ns, user string, rules []rbacv1.PolicyRule) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}
	if _, err := env.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	if out, _ := kubectlOut("auth", "can-i", "create", "deployments", "-n", ns, "--as", user); !strings.HasPrefix(out, "no") {
		t.Fatalf("%s may create deployments (%q): not a namespace user", user, out)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate.UserName = user
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
