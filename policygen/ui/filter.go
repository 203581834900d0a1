package ui

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Filter narrows the verdicts a stream sends to those an operator asked for. It is applied on the
// server: on a busy cluster a narrow filter then costs the browser only the lines it shows, and it
// searches the whole ring rather than what a browser happened to keep. The zero Filter matches all.
type Filter struct {
	// Namespace and Workload ("Kind/name") match the reporting pod's exactly.
	Namespace string
	Workload  string
	// Verdict is "deny" or "audit".
	Verdict string
	Port    uint16
	// peer is an address or CIDR containing the peer's address (peerPrefix), or else text found in the
	// peer's name or the DNS name it was resolved from, in any case (kept lower-cased).
	peer       string
	peerPrefix netip.Prefix
	// words are the words of ?q=, lower-cased, each to be found in one of the verdict's fields (its
	// DNS name included).
	words []string
}

// ParseFilter reads a filter from query parameters namespace, workload, verdict, peer, port and q.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Namespace: q.Get("namespace"), Workload: q.Get("workload"), Verdict: q.Get("verdict"),
		words: strings.Fields(strings.ToLower(q.Get("q")))}
	switch f.Verdict {
	case "", "deny", "audit":
	default:
		return Filter{}, fmt.Errorf("verdict: want deny or audit, not %q", f.Verdict)
	}
	if p := q.Get("port"); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Filter{}, fmt.Errorf("port: want a number from 1 to 65535, not %q", p)
		}
		f.Port = uint16(n)
	}
	peer := strings.TrimSpace(q.Get("peer"))
	if a, err := netip.ParseAddr(peer); err == nil {
		f.peerPrefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	} else if p, err := netip.ParsePrefix(peer); err == nil {
		f.peerPrefix = p.Masked()
	}
	f.peer = strings.ToLower(peer)
	return f, nil
}

// Match reports whether v passes every part of the filter.
func (f Filter) Match(v Event) bool {
	switch {
	case f.Namespace != "" && v.Namespace != f.Namespace,
		f.Workload != "" && v.Workload != f.Workload,
		f.Verdict != "" && v.Verdict != f.Verdict,
		f.Port != 0 && v.Port != f.Port,
		f.peer != "" && !f.matchPeer(v):
		return false
	}
	if len(f.words) == 0 {
		return true
	}
	text := strings.ToLower(strings.Join([]string{v.Namespace, v.Workload, v.Pod, v.Direction, v.Peer, v.PeerAddr, v.Name,
		v.Protocol, strconv.Itoa(int(v.Port)), v.Verdict, v.Rule, v.Evaluator, v.Mode}, "\x00"))
	for _, w := range f.words {
		if !strings.Contains(text, w) {
			return false
		}
	}
	return true
}

func (f Filter) matchPeer(v Event) bool {
	if f.peerPrefix.IsValid() {
		a, err := netip.ParseAddr(v.PeerAddr)
		return err == nil && f.peerPrefix.Contains(a.Unmap())
	}
	return strings.Contains(strings.ToLower(v.Peer), f.peer) || strings.Contains(strings.ToLower(v.Name), f.peer)
}
