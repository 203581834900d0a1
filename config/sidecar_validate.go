package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"podwall.io/podwall/api/policy"
)

// validate reports every problem at once, each prefixed with its key, so that an operator fixes a
// ConfigMap in one round.
func (s Sidecar) validate() error {
	var p problems
	s.checkTuning(&p)
	s.Mesh.check(&p)
	s.Queue.check(&p)
	s.Workers.check(&p)
	s.checkPolicySource(&p)
	checkListenAddr(&p, s.ListenAddr, s.Mesh)
	s.Pod.check(&p)
	return errors.Join(p...)
}

// checkTuning checks the settings a platform file may set: the live ones, fail-mode,
// deny-memo-timeout and the DNS limits.
func (s Sidecar) checkTuning(p *problems) {
	s.Live.check(p)
	oneOf(p, "fail-mode", s.FailMode, FailClosed, FailOpen)
	if s.DenyMemoTimeout < 100*time.Millisecond {
		p.add("deny-memo-timeout", "%v is under the 100ms minimum", s.DenyMemoTimeout)
	}
	s.DNS.check(p)
}

// check wants TTL bounds an app can connect within and caps that hold something. A floor under 1s
// would let an address expire before the app that asked for it connects.
func (d DNS) check(p *problems) {
	if d.MinTTL < time.Second {
		p.add("dns-min-ttl", "%v is under the 1s minimum", d.MinTTL)
	}
	if d.MaxTTL < d.MinTTL {
		p.add("dns-max-ttl", "%v is under dns-min-ttl (%v)", d.MaxTTL, d.MinTTL)
	}
	if d.MaxNames < 1 {
		p.add("dns-max-names", "%d is under the minimum of 1", d.MaxNames)
	}
	if d.MaxAddrs < 1 {
		p.add("dns-max-addrs", "%d is under the minimum of 1", d.MaxAddrs)
	}
}

func (l SidecarLive) check(p *problems) {
	oneOf(p, "mode", l.Mode, "", policy.Learn, policy.Monitor, policy.Protect)
	oneOf(p, "log-allows", l.Log.Allows, LogFirstAllow, LogAllAllows, LogNoAllows)
	if l.Log.AllowInterval < time.Second {
		p.add("log-allow-interval", "%v is under the 1s minimum", l.Log.AllowInterval)
	}
	if !(l.Log.Rate > 0) || math.IsInf(l.Log.Rate, 0) {
		p.add("log-rate", "%v is not a positive number of lines per second", l.Log.Rate)
	}
	if l.Log.Burst < 1 {
		p.add("log-burst", "%d is under the minimum of 1", l.Log.Burst)
	}
}

// check refuses port 0 and a port listed twice: a port is one proxy's inbound or outbound target.
func (m MeshPorts) check(p *problems) {
	seen := map[uint16]string{}
	lists := []struct {
		key   string
		ports []uint16
	}{{"mesh-outbound-ports", m.Outbound}, {"mesh-inbound-ports", m.Inbound}}
	for _, l := range lists {
		key := l.key
		for _, port := range l.ports {
			switch {
			case port == 0:
				p.add(key, "0 is not a port")
			case seen[port] != "":
				p.add(key, "port %d is listed twice (also in %s)", port, seen[port])
			default:
				seen[port] = key
			}
		}
	}
}

func (q Queues) check(p *problems) {
	if q.Count == 0 {
		p.add("queue-count", "must be at least 1")
	}
	// The queue after the connection queues takes the pod's DNS packets.
	if last := int(q.Base) + int(q.Count); last > math.MaxUint16 {
		p.add("queue-count", "queues %d to %d (the last for DNS) run past the last queue number, 65535", q.Base, last)
	}
}

// check wants a pool of at least one worker that may grow, and no more workers than a sidecar could
// keep busy.
func (w VerdictWorkers) check(p *problems) {
	if w.Min < 1 {
		p.add("verdict-min-workers", "%d is under the minimum of 1", w.Min)
	}
	if w.Max < w.Min {
		p.add("verdict-max-workers", "%d is under verdict-min-workers (%d)", w.Max, w.Min)
	}
	if w.Max > maxWorkers {
		p.add("verdict-max-workers", "%d is over the maximum of %d", w.Max, maxWorkers)
	}
}

// checkPolicySource wants exactly one source of policy: a file (standalone) or policygen.
func (s Sidecar) checkPolicySource(p *problems) {
	switch {
	case s.PolicyFile == "" && s.PolicyGen.URL == "":
		p.add("policy-file", "set policy-file (standalone) or policygen-url")
	case s.PolicyFile != "" && s.PolicyGen.URL != "":
		p.add("policygen-url", "set policy-file or policygen-url, not both")
	case s.PolicyGen.URL != "":
		u, err := url.Parse(s.PolicyGen.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			p.add("policygen-url", "%q is not an https URL: the token must not travel in clear", s.PolicyGen.URL)
		}
		if s.PolicyGen.TokenFile == "" {
			p.add("policygen-token-file", "required with policygen-url")
		}
		if s.PolicyGen.CA != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(s.PolicyGen.CA)) {
			p.add("policygen-ca", "no PEM certificate in it")
		}
	}
}

// checkListenAddr wants host:port with a real port, not one the mesh proxy's redirect would steal.
func checkListenAddr(p *problems, addr string, mesh MeshPorts) {
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		p.add("listen-addr", "%q is not host:port", addr)
		return
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	switch {
	case err != nil || port == 0:
		p.add("listen-addr", "%q is not a port from 1 to 65535", portText)
	case slices.Contains(mesh.Outbound, uint16(port)) || slices.Contains(mesh.Inbound, uint16(port)):
		p.add("listen-addr", "port %d is a mesh proxy port", port)
	}
}

// check validates what is set; every field is optional.
func (d Pod) check(p *problems) {
	if d.Name != "" && !IsDNSSubdomain(d.Name) {
		p.add("pod-name", "%q is not a DNS subdomain name", d.Name)
	}
	if d.Namespace != "" && !IsDNSLabel(d.Namespace) {
		p.add("pod-namespace", "%q is not a DNS label", d.Namespace)
	}
	if d.ServiceAccount != "" && !IsDNSSubdomain(d.ServiceAccount) {
		p.add("pod-service-account", "%q is not a DNS subdomain name", d.ServiceAccount)
	}
	for _, ip := range d.IPs {
		if !ip.IsValid() || ip.Zone() != "" {
			p.add("pod-ips", "%q is not an IP address", ip)
		}
	}
	if kind, name, ok := strings.Cut(d.Workload, "/"); d.Workload != "" && (!ok || kind == "" || !IsDNSSubdomain(name)) {
		p.add("workload", "%q is not Kind/name", d.Workload)
	}
}

// problems collects configuration errors, each naming its key.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// oneOf checks an enumerated setting.
func oneOf[T ~string](p *problems, key string, v T, allowed ...T) {
	if slices.Contains(allowed, v) {
		return
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = strconv.Quote(string(a))
	}
	p.add(key, "%q is not one of %s", v, strings.Join(names, ", "))
}

// IsDNSLabel reports whether s is an RFC 1123 label, as Kubernetes namespace names are.
func IsDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// IsDNSSubdomain reports whether s is an RFC 1123 subdomain, as most Kubernetes object names are.
func IsDNSSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !IsDNSLabel(label) {
			return false
		}
	}
	return true
}
