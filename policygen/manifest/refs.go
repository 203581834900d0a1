package manifest

import (
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// serviceRef is a Service the workload's manifest names, the port it names (0: any), and where.
type serviceRef struct {
	svc    *corev1.Service
	port   int32
	source string
}

// envRef matches a reference to a Service's link variables, e.g. $(API_SERVICE_HOST).
var envRef = regexp.MustCompile(`([A-Z0-9_]+)_SERVICE_(HOST|PORT)`)

// referencedServices finds the Services named in the template's environment (link variables, hosts
// and URLs) and in the egress annotation. Only names of existing Services count: a word in a value
// that happens to name no Service yields nothing.
func referencedServices(in Input) []serviceRef {
	byName := map[string]*corev1.Service{}
	for i := range in.Services {
		s := &in.Services[i]
		byName[s.Namespace+"/"+s.Name] = s
	}
	var refs []serviceRef
	seen := map[serviceRef]bool{}
	add := func(ns, name string, port int32, where string) {
		s := byName[ns+"/"+name]
		r := serviceRef{s, port, where + " names Service " + ns + "/" + name}
		if s == nil || seen[r] || (ns == in.DNS.Namespace && name == in.DNS.Name) {
			return
		}
		seen[r] = true
		refs = append(refs, r)
	}
	for _, c := range slices.Concat(in.Template.Spec.InitContainers, in.Template.Spec.Containers) {
		for _, e := range c.Env {
			where := "env " + e.Name + " of container " + c.Name
			for _, m := range envRef.FindAllStringSubmatch(e.Name+" "+e.Value, -1) {
				add(in.Namespace, strings.ReplaceAll(strings.ToLower(m[1]), "_", "-"), 0, where)
			}
			for _, h := range hosts(e.Value) {
				if ns, name, ok := serviceOfHost(h.host, in.Namespace, in.clusterDomain()); ok {
					add(ns, name, h.port, where)
				}
			}
		}
	}
	for i, a := range []string{in.Annotations[EgressAnnotation], in.Template.Annotations[EgressAnnotation]} {
		where := "annotation " + EgressAnnotation + [2]string{" of the workload", " of the pod template"}[i]
		for _, f := range strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
			ns, name, ok := strings.Cut(f, "/")
			if !ok {
				ns, name = in.Namespace, f
			}
			add(ns, name, 0, where)
		}
	}
	return refs
}

func (in Input) clusterDomain() string {
	if in.ClusterDomain == "" {
		return "cluster.local"
	}
	return in.ClusterDomain
}

type hostPort struct {
	host string
	port int32
}

// hosts extracts host names (and ports, when given) from an environment value: URLs, host:port pairs
// and bare names, separated by spaces, commas or semicolons.
func hosts(value string) []hostPort {
	var out []hostPort
	for _, tok := range strings.FieldsFunc(value, func(r rune) bool { return strings.ContainsRune(" ,;\t\n", r) }) {
		host, port := tok, ""
		if strings.Contains(tok, "://") {
			u, err := url.Parse(tok)
			if err != nil {
				continue
			}
			host, port = u.Hostname(), u.Port()
		} else if h, p, err := net.SplitHostPort(tok); err == nil {
			host, port = h, p
		}
		n, _ := strconv.ParseUint(port, 10, 16)
		out = append(out, hostPort{strings.TrimSuffix(strings.ToLower(host), "."), int32(n)})
	}
	return out
}

// serviceOfHost maps a DNS name to the Service it names: "svc", "svc.ns", "svc.ns.svc" or
// "svc.ns.svc.<cluster domain>".
func serviceOfHost(host, namespace, domain string) (ns, name string, ok bool) {
	parts := strings.Split(host, ".")
	if slices.Contains(parts, "") {
		return "", "", false
	}
	switch {
	case len(parts) == 1:
		return namespace, parts[0], true
	case len(parts) == 2:
		return parts[1], parts[0], true
	case parts[2] != "svc":
		return "", "", false
	case len(parts) == 3 || strings.Join(parts[3:], ".") == domain:
		return parts[1], parts[0], true
	}
	return "", "", false
}
