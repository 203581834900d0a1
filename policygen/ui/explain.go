package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/policygen/resolve"
	"podwall.io/podwall/policygen/workload"
	"podwall.io/podwall/sidecar/decide"
)

// Policies hands out a workload's resolved policy, as the policy API serves it (resolve.Hub).
type Policies interface {
	Acquire(ctx context.Context, k workload.Key) (resolve.Snapshot, func(), error)
}

// Explanation is how a pod's sidecar would judge one connection under the policy it is served now.
type Explanation struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Workload is "Kind/name"; Policy the WorkloadPolicy's name.
	Workload string `json:"workload"`
	Policy   string `json:"policy"`
	Revision int64  `json:"revision"`
	// Mode is the mode judged in: the policy's, or the one asked for.
	Mode      policy.Mode `json:"mode"`
	Direction string      `json:"direction"`
	Address   string      `json:"address"`
	// Name is the DNS name asked about, which policygen resolved to Address.
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	// Verdict, Rule, Evaluator and Peer are the sidecar's decision (decide.Decision).
	Verdict   string `json:"verdict"`
	Rule      string `json:"rule"`
	Evaluator string `json:"evaluator"`
	Peer      string `json:"peer"`
	// Allows is, when a rule decided, what it allows: its peer and ports.
	Allows string `json:"allows,omitempty"`
}

// explain judges, without sending anything, a connection of a pod (?namespace=&pod=) to or from
// ?dest= (an address, or a DNS name policygen resolves now) and ?port=, over ?protocol= (TCP), in
// ?direction= (egress, ingress or loopback), by the sidecar's own decision code run on the policy
// the pod is served; ?mode= judges in another mode (what Protect would do).
func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ctx := r.Context()
	if s.opts.Policies == nil {
		writeError(w, http.StatusServiceUnavailable, "this policygen does not explain connections")
		return
	}
	ex := Explanation{Namespace: q.Get("namespace"), Pod: q.Get("pod"), Direction: strings.ToLower(cmp.Or(q.Get("direction"), "egress")),
		Protocol: strings.ToUpper(cmp.Or(q.Get("protocol"), "TCP")), Mode: policy.Mode(q.Get("mode"))}
	proto := policy.Protocol(ex.Protocol)
	port, err := strconv.ParseUint(q.Get("port"), 10, 16)
	switch {
	case ex.Namespace == "" || ex.Pod == "":
		err = errors.New("namespace and pod: name the pod whose connection to explain")
	case proto != policy.TCP && proto != policy.UDP && proto != policy.SCTP:
		err = fmt.Errorf("protocol: want TCP, UDP or SCTP, not %q", ex.Protocol)
	case err != nil || port == 0:
		err = fmt.Errorf("port: want a number from 1 to 65535, not %q", q.Get("port"))
	case ex.Direction != "egress" && ex.Direction != "ingress" && ex.Direction != "loopback":
		err = fmt.Errorf("direction: want egress, ingress or loopback, not %q", ex.Direction)
	case ex.Mode != "" && ex.Mode != policy.Learn && ex.Mode != policy.Monitor && ex.Mode != policy.Protect:
		err = fmt.Errorf("mode: want Learn, Monitor or Protect, not %q", ex.Mode)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ex.Port = uint16(port)
	var pod corev1.Pod
	if err := s.reader.Get(ctx, client.ObjectKey{Namespace: ex.Namespace, Name: ex.Pod}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			writeError(w, http.StatusNotFound, "no pod "+ex.Namespace+"/"+ex.Pod)
			return
		}
		writeError(w, http.StatusServiceUnavailable, "cannot read the pod now, retry: "+err.Error())
		return
	}
	podIP, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		writeError(w, http.StatusConflict, "pod "+ex.Namespace+"/"+ex.Pod+" has no IP address yet")
		return
	}
	conn := decide.Conn{Direction: policy.Egress, Proto: proto.Number()}
	dest, err := s.destination(ctx, ex.Direction, q.Get("dest"), &ex)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch ex.Direction {
	case "egress":
		conn.Local, conn.Remote = netip.AddrPortFrom(podIP, 0), netip.AddrPortFrom(dest, ex.Port)
		if ex.Name != "" {
			conn.Names = []string{policy.CanonicalName(ex.Name)}
		}
	case "ingress":
		conn.Direction, conn.Local, conn.Remote = policy.Ingress, netip.AddrPortFrom(podIP, ex.Port), netip.AddrPortFrom(dest, 0)
	case "loopback":
		conn.Direction, conn.Local, conn.Remote = policy.Loopback, netip.AddrPortFrom(dest, 0), netip.AddrPortFrom(dest, ex.Port)
	}
	k, err := workload.Of(ctx, s.reader, nil, &pod)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot tell the pod's workload now, retry: "+err.Error())
		return
	}
	ex.Workload, ex.Policy = k.Kind+"/"+k.Name, workload.PolicyName(k.Kind, k.Name)
	snap, release, err := s.opts.Policies.Acquire(ctx, k)
	defer release()
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no policy for workload %s: %v", k, err))
		return
	}
	served, _ := snap.For(ex.Pod) // a canary pod's form is Protect
	d, err := decide.New(served, decide.Options{Mode: ex.Mode})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "the resolved policy does not load: "+err.Error())
		return
	}
	dec := d.Decide(conn)
	ex.Revision, ex.Mode = dec.Revision, dec.Mode
	ex.Verdict, ex.Rule, ex.Evaluator, ex.Peer = dec.Verdict.String(), dec.Rule, dec.Evaluator, dec.Peer
	ex.Allows = allows(served, dec.Rule)
	writeJSON(w, ex)
}

// destination reads the other end: an address, or a DNS name (egress) resolved by policygen now;
// loopback is the pod's own 127.0.0.1 unless an address is given.
func (s *Server) destination(ctx context.Context, direction, dest string, ex *Explanation) (netip.Addr, error) {
	if dest == "" && direction == "loopback" {
		dest = "127.0.0.1"
	}
	if a, err := netip.ParseAddr(dest); err == nil {
		ex.Address = a.Unmap().String()
		return a.Unmap(), nil
	}
	if direction != "egress" || dest == "" {
		return netip.Addr{}, fmt.Errorf("dest: want an IP address, not %q", dest)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", dest)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("dest: %q is no IP address and policygen cannot resolve it: %v", dest, err)
	}
	ex.Name, ex.Address = dest, addrs[0].Unmap().String()
	return addrs[0].Unmap(), nil
}

// allows describes the rule id of p: its peer and ports; empty when no rule of p has that id.
func allows(p *policy.Policy, id string) string {
	for _, set := range [][]policy.Rule{p.Ingress, p.Egress} {
		for _, r := range set {
			if r.ID != id {
				continue
			}
			ports := make([]string, 0, len(r.Ports))
			for _, pr := range r.Ports {
				switch lo, hi := pr.Bounds(); {
				case lo == hi:
					ports = append(ports, fmt.Sprintf("%s %d", pr.Protocol, lo))
				case lo == 0 && hi == 65535:
					ports = append(ports, string(pr.Protocol)+" every port")
				default:
					ports = append(ports, fmt.Sprintf("%s %d-%d", pr.Protocol, lo, hi))
				}
			}
			if len(ports) == 0 {
				return r.Peer + ", every port"
			}
			return r.Peer + ", " + strings.Join(ports, " ")
		}
	}
	return ""
}
