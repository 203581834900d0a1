package manifest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

func svc(ns, name string, sel map[string]string, ports ...corev1.ServicePort) corev1.Service {
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: ports},
	}
}

func tcp(port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: port, TargetPort: target}
}

func template(env ...corev1.EnvVar) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "web",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
			Env:   env,
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("metrics")}}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
		}}},
	}
}

var dns = v1.ServicePeer{Namespace: "kube-system", Name: "kube-dns"}

func services() []corev1.Service {
	return []corev1.Service{
		svc("kube-system", "kube-dns", map[string]string{"k8s-app": "kube-dns"}, corev1.ServicePort{Protocol: "UDP", Port: 53}),
		svc("shop", "web", map[string]string{"app": "web"}, tcp(80, intstr.FromString("http")), tcp(443, intstr.FromInt32(8443))),
		svc("shop", "other", map[string]string{"app": "other"}, tcp(80, intstr.FromInt32(80))),
		svc("shop", "api", map[string]string{"app": "api"}, tcp(8080, intstr.FromInt32(8000))),
		svc("shop", "cache", map[string]string{"app": "cache"}, tcp(6379, intstr.IntOrString{})),
		svc("billing", "ledger", map[string]string{"app": "ledger"}, tcp(443, intstr.FromInt32(8443)), tcp(80, intstr.FromInt32(8080))),
		svc("shop", "external", nil, tcp(443, intstr.IntOrString{})),
	}
}

func egressRule(name string, ns, svcName string, ports ...v1.Port) v1.Rule {
	return v1.Rule{Name: name, Origin: policy.OriginManifest, Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: ns, Name: svcName}}}, Ports: ports}
}

func TestDerive(t *testing.T) {
	dnsRule := egressRule("m-dns", "kube-system", "kube-dns", v1.Port{Protocol: "TCP", Port: 53}, v1.Port{Protocol: "UDP", Port: 53})
	webIngress := []v1.Rule{
		{Name: "m-probes", Origin: policy.OriginManifest, Peers: []v1.Peer{{Nodes: true}},
			Ports: []v1.Port{{Protocol: "TCP", Port: 8080}, {Protocol: "TCP", Port: 9090}}},
		{Name: "m-svc-web", Origin: policy.OriginManifest, Peers: anyPeer,
			Ports: []v1.Port{{Protocol: "TCP", Port: 8080}, {Protocol: "TCP", Port: 8443}}},
	}
	tests := []struct {
		name        string
		env         []corev1.EnvVar
		annotations map[string]string
		want        Rules
	}{
		{"services selecting it and probes, DNS", nil, nil, Rules{Ingress: webIngress, Egress: []v1.Rule{dnsRule}}},
		{"service link variables", []corev1.EnvVar{
			{Name: "API_SERVICE_HOST", Value: "10.0.0.1"},
			{Name: "CACHE", Value: "$(CACHE_SERVICE_HOST):$(CACHE_SERVICE_PORT)"},
			{Name: "NOPE", Value: "$(MISSING_SERVICE_HOST)"},
		}, nil, Rules{Ingress: webIngress, Egress: []v1.Rule{
			dnsRule,
			egressRule("m-svc-api", "shop", "api", v1.Port{Protocol: "TCP", Port: 8000}, v1.Port{Protocol: "TCP", Port: 8080}),
			egressRule("m-svc-cache", "shop", "cache", v1.Port{Protocol: "TCP", Port: 6379}),
		}}},
		{"URLs and host names", []corev1.EnvVar{
			{Name: "LEDGER_URL", Value: "https://ledger.billing.svc.cluster.local:443/v1"},
			{Name: "API", Value: "api:8080"},
			{Name: "API_AGAIN", Value: "http://api.shop:8080"},
			{Name: "DNS", Value: "kube-dns.kube-system"},
			{Name: "WORDS", Value: "true yes https://example.com other.shop.svc.elsewhere.local"},
		}, nil, Rules{Ingress: webIngress, Egress: []v1.Rule{
			egressRule("m-dns", "kube-system", "kube-dns", v1.Port{Protocol: "TCP", Port: 53}, v1.Port{Protocol: "UDP", Port: 53}),
			egressRule("m-svc-api", "shop", "api", v1.Port{Protocol: "TCP", Port: 8000}, v1.Port{Protocol: "TCP", Port: 8080}),
			egressRule("m-svc-ledger.billing", "billing", "ledger", v1.Port{Protocol: "TCP", Port: 443}, v1.Port{Protocol: "TCP", Port: 8443}),
		}}},
		{"annotation", nil, map[string]string{EgressAnnotation: "billing/ledger, external nosuch"},
			Rules{Ingress: webIngress, Egress: []v1.Rule{
				dnsRule,
				{Name: "m-svc-external", Origin: policy.OriginManifest, Peers: []v1.Peer{{Service: &v1.ServicePeer{Namespace: "shop", Name: "external",
					Endpoints: &v1.ServiceEndpoints{}}}}, Ports: []v1.Port{{Protocol: "TCP", Port: 443}}},
				egressRule("m-svc-ledger.billing", "billing", "ledger", v1.Port{Protocol: "TCP", Port: 80},
					v1.Port{Protocol: "TCP", Port: 443}, v1.Port{Protocol: "TCP", Port: 8080}, v1.Port{Protocol: "TCP", Port: 8443}),
			}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Derive(Input{Namespace: "shop", Template: template(tc.env...), Annotations: tc.annotations, Services: services(), DNS: dns})
			if d := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(Rules{}, "Sources", "Open")); d != "" {
				t.Errorf("rules (-want +got):\n%s", d)
			}
		})
	}
}

func TestDeriveWithoutServicesOrDNS(t *testing.T) {
	tpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	if d := cmp.Diff(Rules{}, Derive(Input{Namespace: "shop", Template: tpl, Services: services()}), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
}

func TestNormalizePorts(t *testing.T) {
	got := NormalizePorts([]v1.Port{{Port: 80}, {Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 80}, {Protocol: "UDP"}, {Protocol: "TCP", Port: 22}})
	want := []v1.Port{{Protocol: "TCP", Port: 22}, {Protocol: "TCP", Port: 80}, {Protocol: "UDP"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
}

func TestReplaceOrigin(t *testing.T) {
	r := func(name string, o policy.Origin) v1.Rule { return v1.Rule{Name: name, Origin: o} }
	tests := []struct {
		name      string
		rules     []v1.Rule
		generated []v1.Rule
		want      []v1.Rule
	}{
		{"empty", nil, nil, nil},
		{"replaces only its origin", []v1.Rule{r("m-a", "manifest"), r("mine", "user"), r("l-x", "learned")},
			[]v1.Rule{r("m-c", "manifest"), r("m-b", "manifest")},
			[]v1.Rule{r("mine", "user"), r("l-x", "learned"), r("m-b", "manifest"), r("m-c", "manifest")}},
		{"user rule keeps its name", []v1.Rule{r("m-a", "user")}, []v1.Rule{r("m-a", "manifest")}, []v1.Rule{r("m-a", "user")}},
		{"removes vanished", []v1.Rule{r("m-a", "manifest")}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ReplaceOrigin(tc.rules, policy.OriginManifest, tc.generated)); d != "" {
				t.Errorf("rules (-want +got):\n%s", d)
			}
		})
	}
}

func FuzzHosts(f *testing.F) {
	for _, s := range []string{"https://a.b.svc.cluster.local:443/x", "api:8080", "a b,c;d", "http://[::1]:80", "x:99999", "://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, h := range hosts(v) {
			if h.port < 0 || h.port > 65535 {
				t.Fatalf("port %d out of range for %q", h.port, v)
			}
			if ns, name, ok := serviceOfHost(h.host, "default", "cluster.local"); ok && (ns == "" || name == "") {
				t.Fatalf("empty service name from %q", h.host)
			}
		}
	})
}
