package manifest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
)

func TestDeriveNarrowsServicePortsToCallers(t *testing.T) {
	// Service web targets 8080 and 8443; lb (a LoadBalancer) and tagged (annotated public) target 8080.
	lb := svc("shop", "lb", map[string]string{"app": "web"}, tcp(80, intstr.FromInt32(8080)))
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	tagged := svc("shop", "tagged", map[string]string{"app": "web"}, tcp(80, intstr.FromInt32(8080)))
	tagged.Annotations = map[string]string{v1.PublicAnnotation: "true"}
	svcs := append(services(), lb, tagged)
	caller := v1.Rule{Name: "l-deployment-client", Origin: policy.OriginLearned, Peers: []v1.Peer{{Workload: &v1.WorkloadPeer{
		WorkloadRef: v1.WorkloadRef{Kind: "Deployment", Name: "client"}}}}, Ports: []v1.Port{{Protocol: "TCP", Port: 8080}}}
	open := func(rule, service string, port int32, reason v1.OpenReason) v1.OpenPort {
		return v1.OpenPort{Rule: rule, Service: service, Protocol: "TCP", Port: port, Reason: reason}
	}
	ports := func(ps ...int32) []v1.Port {
		var out []v1.Port
		for _, p := range ps {
			out = append(out, v1.Port{Protocol: "TCP", Port: p})
		}
		return out
	}
	tests := []struct {
		name     string
		mode     policy.Mode
		ingress  []v1.Rule
		webPorts []v1.Port // m-svc-web's ports, nil: no rule
		open     []v1.OpenPort
		source   string // in m-svc-web's source
	}{
		{"learning keeps every port open", policy.Learn, []v1.Rule{caller}, ports(8080, 8443),
			[]v1.OpenPort{open("m-svc-lb", "shop/lb", 8080, v1.OpenPublic), open("m-svc-tagged", "shop/tagged", 8080, v1.OpenPublic),
				open("m-svc-web", "shop/web", 8080, v1.OpenLearning), open("m-svc-web", "shop/web", 8443, v1.OpenLearning)},
			"selects this workload"},
		{"out of Learn a port with callers is narrowed, one without stays open", policy.Monitor, []v1.Rule{caller}, ports(8443),
			[]v1.OpenPort{open("m-svc-lb", "shop/lb", 8080, v1.OpenPublic), open("m-svc-tagged", "shop/tagged", 8080, v1.OpenPublic),
				open("m-svc-web", "shop/web", 8443, v1.OpenNoCallers)},
			"TCP/8080 narrowed to the observed callers"},
		{"a learned rule of every port narrows them all", policy.Protect, []v1.Rule{
			{Name: "l-cidr-10-0-0-1-32", Origin: policy.OriginLearned, Peers: []v1.Peer{{CIDR: "10.0.0.1/32"}}, Ports: []v1.Port{{Protocol: "TCP"}}},
		}, nil,
			[]v1.OpenPort{open("m-svc-lb", "shop/lb", 8080, v1.OpenPublic), open("m-svc-tagged", "shop/tagged", 8080, v1.OpenPublic)},
			""},
		{"a user rule or a manifest rule is no observed caller", policy.Protect, []v1.Rule{
			{Name: "mine", Origin: policy.OriginUser, Peers: []v1.Peer{{CIDR: "10.0.0.0/8"}}, Ports: []v1.Port{{Protocol: "TCP"}}},
			{Name: "m-probes", Origin: policy.OriginManifest, Peers: []v1.Peer{{Nodes: true}}, Ports: ports(8080, 8443)},
		}, ports(8080, 8443),
			[]v1.OpenPort{open("m-svc-lb", "shop/lb", 8080, v1.OpenPublic), open("m-svc-tagged", "shop/tagged", 8080, v1.OpenPublic),
				open("m-svc-web", "shop/web", 8080, v1.OpenNoCallers), open("m-svc-web", "shop/web", 8443, v1.OpenNoCallers)},
			"selects this workload"},
		{"no callers at all", policy.Protect, nil, ports(8080, 8443),
			[]v1.OpenPort{open("m-svc-lb", "shop/lb", 8080, v1.OpenPublic), open("m-svc-tagged", "shop/tagged", 8080, v1.OpenPublic),
				open("m-svc-web", "shop/web", 8080, v1.OpenNoCallers), open("m-svc-web", "shop/web", 8443, v1.OpenNoCallers)},
			"selects this workload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Derive(Input{Namespace: "shop", Template: template(), Services: svcs, DNS: dns, Mode: tc.mode, Ingress: tc.ingress})
			var web *v1.Rule
			for i, r := range got.Ingress {
				if r.Name == "m-svc-web" {
					web = &got.Ingress[i]
				}
				if (r.Name == "m-svc-lb" || r.Name == "m-svc-tagged") && !cmp.Equal(r.Peers, anyPeer) {
					t.Errorf("public rule %s: peers %v, want every address", r.Name, r.Peers)
				}
			}
			switch {
			case tc.webPorts == nil && web != nil:
				t.Errorf("m-svc-web %+v, want none (every port narrowed)", web)
			case tc.webPorts != nil && (web == nil || !cmp.Equal(web.Ports, tc.webPorts) || !cmp.Equal(web.Peers, anyPeer)):
				t.Errorf("m-svc-web %+v, want open to every address on %v", web, tc.webPorts)
			}
			if d := cmp.Diff(tc.open, got.Open); d != "" {
				t.Errorf("open ports (-want +got):\n%s", d)
			}
			if s := got.Sources[SourceKey("ingress", "m-svc-web")]; !strings.Contains(s, tc.source) {
				t.Errorf("source %q, want it to say %q", s, tc.source)
			}
			if s := got.Sources[SourceKey("ingress", "m-svc-lb")]; !strings.Contains(s, "of type LoadBalancer, so its ports stay open") {
				t.Errorf("lb's source %q does not say why it stays open", s)
			}
		})
	}
}

func TestOpenIn(t *testing.T) {
	open := []v1.OpenPort{{Rule: "m-svc-web", Service: "shop/web", Protocol: "TCP", Port: 8080, Reason: v1.OpenNoCallers},
		{Rule: "m-svc-web", Service: "shop/web", Protocol: "TCP", Port: 8443, Reason: v1.OpenNoCallers}}
	// In Protect, 8080 waits as a proposal: the rule as written still opens only 8443.
	rules := []v1.Rule{{Name: "m-svc-web", Origin: policy.OriginManifest, Peers: anyPeer, Ports: []v1.Port{{Protocol: "TCP", Port: 8443}}},
		{Name: "other", Origin: policy.OriginUser, Peers: anyPeer}}
	if d := cmp.Diff(open[1:], OpenIn(open, rules)); d != "" {
		t.Errorf("open ports (-want +got):\n%s", d)
	}
}

func TestDeriveMeshLoopback(t *testing.T) {
	deny := func(name string, ports ...int32) v1.LoopbackRule {
		r := v1.LoopbackRule{Name: name, Origin: policy.OriginManifest, Action: policy.ActionDeny}
		for _, p := range ports {
			r.Ports = append(r.Ports, v1.Port{Protocol: "TCP", Port: p})
		}
		return r
	}
	withContainer := func(init bool, name string) *corev1.PodTemplateSpec {
		t := template()
		c := corev1.Container{Name: name}
		if init {
			t.Spec.InitContainers = append(t.Spec.InitContainers, c)
		} else {
			t.Spec.Containers = append(t.Spec.Containers, c)
		}
		return t
	}
	marked := func(labels, annotations map[string]string) *corev1.PodTemplateSpec {
		t := template()
		for k, v := range labels {
			t.Labels[k] = v
		}
		t.Annotations = annotations
		return t
	}
	annotated := template()
	annotated.Annotations = map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`}
	tests := []struct {
		name     string
		tpl      *corev1.PodTemplateSpec
		loopback []v1.LoopbackRule
		want     []v1.LoopbackRule
	}{
		{"no mesh", template(), nil, nil},
		{"istio-proxy container", withContainer(false, "istio-proxy"), nil, []v1.LoopbackRule{deny("m-istio-proxy", 15000, 15004, 15020, 15021, 15090)}},
		{"istio's status annotation", annotated, nil, []v1.LoopbackRule{deny("m-istio-proxy", 15000, 15004, 15020, 15021, 15090)}},
		{"linkerd-proxy as a native sidecar", withContainer(true, "linkerd-proxy"), nil, []v1.LoopbackRule{deny("m-linkerd-proxy", 4190, 4191)}},
		{"istio's injection label on the template", marked(map[string]string{"sidecar.istio.io/inject": "true"}, nil), nil,
			[]v1.LoopbackRule{deny("m-istio-proxy", 15000, 15004, 15020, 15021, 15090)}},
		{"linkerd's injection annotation on the template", marked(nil, map[string]string{"linkerd.io/inject": "enabled"}), nil,
			[]v1.LoopbackRule{deny("m-linkerd-proxy", 4190, 4191)}},
		{"a learned or user allow takes its port out, a manifest or deny rule does not", withContainer(false, "istio-proxy"), []v1.LoopbackRule{
			{Name: "l-loopback", Origin: policy.OriginLearned, Action: policy.ActionAllow, Ports: []v1.Port{{Protocol: "TCP", Port: 15000}}},
			{Name: "mine", Origin: policy.OriginUser, Action: policy.ActionAllow, Ports: []v1.Port{{Protocol: "TCP", Port: 15020, EndPort: 15021}}},
			{Name: "no", Origin: policy.OriginUser, Action: policy.ActionDeny, Ports: []v1.Port{{Protocol: "TCP", Port: 15004}}},
			{Name: "m-istio-proxy", Origin: policy.OriginManifest, Action: policy.ActionAllow, Ports: []v1.Port{{Protocol: "TCP", Port: 15090}}},
		}, []v1.LoopbackRule{deny("m-istio-proxy", 15004, 15090)}},
		{"every port allowed: no rule", withContainer(false, "linkerd-proxy"), []v1.LoopbackRule{
			{Name: "all", Origin: policy.OriginUser, Action: policy.ActionAllow, Ports: []v1.Port{{Protocol: "TCP"}}}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Derive(Input{Namespace: "shop", Template: tc.tpl, Loopback: tc.loopback})
			if d := cmp.Diff(tc.want, got.Loopback); d != "" {
				t.Errorf("loopback (-want +got):\n%s", d)
			}
			for _, r := range got.Loopback {
				if s := got.Sources[SourceKey("loopback", r.Name)]; !strings.Contains(s, "means a mesh proxy in the pods") {
					t.Errorf("source of %s: %q", r.Name, s)
				}
			}
		})
	}

	// A namespace that asks both meshes' webhooks to inject their proxies; a template may opt out.
	in := Input{Namespace: "shop", Template: template(), NamespaceLabels: map[string]string{"istio-injection": "enabled"},
		NamespaceAnnotations: map[string]string{"linkerd.io/inject": "enabled"}}
	both := []v1.LoopbackRule{deny("m-istio-proxy", 15000, 15004, 15020, 15021, 15090), deny("m-linkerd-proxy", 4190, 4191)}
	if d := cmp.Diff(both, Derive(in).Loopback); d != "" {
		t.Errorf("injecting namespace: loopback (-want +got):\n%s", d)
	}
	in.Template = marked(map[string]string{"sidecar.istio.io/inject": "false"}, map[string]string{"linkerd.io/inject": "disabled"})
	if got := Derive(in).Loopback; got != nil {
		t.Errorf("template opted out of its namespace's injection: loopback %+v, want none", got)
	}
}

func TestReplaceLoopbackOrigin(t *testing.T) {
	r := func(name string, o policy.Origin) v1.LoopbackRule { return v1.LoopbackRule{Name: name, Origin: o} }
	got := ReplaceLoopbackOrigin([]v1.LoopbackRule{r("m-old", "manifest"), r("mine", "user"), r("m-istio-proxy", "user")}, policy.OriginManifest,
		[]v1.LoopbackRule{r("m-linkerd-proxy", ""), r("m-istio-proxy", "")})
	want := []v1.LoopbackRule{r("mine", "user"), r("m-istio-proxy", "user"), r("m-linkerd-proxy", "manifest")}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("loopback (-want +got):\n%s", d)
	}
}
