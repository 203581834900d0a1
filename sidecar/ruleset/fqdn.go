package ruleset

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
)

// FQDNAddr is an address DNS answers gave the pod: the names it was resolved from, and when it
// expires for them.
type FQDNAddr struct {
	Addr    netip.Addr
	Names   []string
	Expires time.Time
}

// fqdnSet is the FQDN set of a family: concatenated ranges (pipapo) whose elements time out one by one.
func fqdnSet(t *nftables.Table, v6 bool) *nftables.Set {
	s := &nftables.Set{Table: t, Name: SetFQDNEgress4, KeyType: keyAddrPort4, Interval: true, Concatenation: true,
		HasTimeout: true}
	if v6 {
		s.Name, s.KeyType = SetFQDNEgress6, keyAddrPort6
	}
	return s
}

// AddFQDN adds, in one batch that the kernel has taken when it returns, the elements of every egress
// rule of p with a pattern matching one of a.Names, for the rule's ports, with timeout a.Expires-now.
// p is the policy of the last Apply, unchanged since (a new revision is a new Policy): its FQDN rules
// are indexed once. An element there already gets the new timeout, longer or shorter: the caller
// passes the expiry the names give the address. An address no rule's pattern matches, or an expired
// one, adds nothing. It must not run concurrently with Apply on the same connection.
func AddFQDN(c *nftables.Conn, p *policy.Policy, a FQDNAddr, now time.Time) error {
	if p == nil || !a.Addr.IsValid() {
		return nil
	}
	elems, v6 := addrElements(indexFQDN(p).spans(a.Names), a, now)
	if len(elems) == 0 {
		return nil
	}
	if err := c.SetAddElements(fqdnSet(table(), v6), elems); err != nil {
		return fmt.Errorf("FQDN address %s: %w", a.Addr, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add FQDN address %s: %w", a.Addr, err)
	}
	return nil
}

// fqdnElements returns the elements of the FQDN sets for the addresses of a name cache under p, as
// timeouts left at now. An address listed twice keeps, per element, the latest expiry.
func fqdnElements(p *policy.Policy, addrs []FQDNAddr, now time.Time) (v4, v6 []nftables.SetElement) {
	x := indexFQDN(p)
	seen := map[string]int{} // key and key end → index in its family's list
	for _, a := range addrs {
		elems, is6 := addrElements(x.spans(a.Names), a, now)
		list := &v4
		if is6 {
			list = &v6
		}
		for _, e := range elems {
			id := string(e.Key) + string(e.KeyEnd)
			if i, ok := seen[id]; ok {
				(*list)[i].Timeout = max((*list)[i].Timeout, e.Timeout)
				continue
			}
			seen[id] = len(*list)
			*list = append(*list, e)
		}
	}
	return v4, v6
}

// addrElements returns the elements of a for spans, with a's time left at now as their timeout
// (none if it has expired), and whether they belong to the IPv6 set.
func addrElements(spans []span, a FQDNAddr, now time.Time) (elems []nftables.SetElement, v6 bool) {
	ip := a.Addr.Unmap().WithZone("")
	left := a.Expires.Sub(now)
	if left < time.Millisecond || len(spans) == 0 {
		return nil, ip.Is6()
	}
	for _, s := range spans {
		elems = append(elems, nftables.SetElement{
			Key:     addrKey(nil, addrOf(ip), ip.Is6(), s.proto, s.lo),
			KeyEnd:  addrKey(nil, addrOf(ip), ip.Is6(), s.proto, s.hi),
			Timeout: left,
		})
	}
	return elems, ip.Is6()
}

// fqdnIndex is what the FQDN elements need of a policy: its FQDN rules, and the bounds of all their spans.
// A policy may have 100,000 address rules and a handful of FQDN rules; AddFQDN runs while a DNS answer
// waits, so it must not walk them all.
type fqdnIndex struct {
	p     *policy.Policy
	rules []fqdnRule
	cuts  []cut
}

// fqdnRule is an egress rule with name patterns, and the spans it allows in the kernel.
type fqdnRule struct {
	patterns []string
	spans    []span
}

// cut is where a span of a protocol starts; 65536 is past the last port.
type cut struct {
	proto uint8
	at    uint32
}

// lastFQDNIndex is the index of the policy most recently applied or added to: policies are immutable
// (a new revision is a new Policy), so the pointer names its contents.
var lastFQDNIndex atomic.Pointer[fqdnIndex]

// indexFQDN returns p's index, built once per policy.
func indexFQDN(p *policy.Policy) *fqdnIndex {
	if x := lastFQDNIndex.Load(); x != nil && x.p == p {
		return x
	}
	x := &fqdnIndex{p: p}
	for _, r := range p.Egress {
		if len(r.Names) == 0 {
			continue
		}
		spans := ruleSpans(r.Ports)
		x.rules = append(x.rules, fqdnRule{patterns: r.Names, spans: spans})
		for _, s := range spans {
			x.cuts = append(x.cuts, cut{s.proto, uint32(s.lo)}, cut{s.proto, uint32(s.hi) + 1})
		}
	}
	slices.SortFunc(x.cuts, func(a, b cut) int { return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.at, b.at)) })
	lastFQDNIndex.Store(x)
	return x
}

// spans returns the port spans of the FQDN rules with a pattern matching one of names, cut at every
// bound of every FQDN rule's spans. The kernel's set for concatenated ranges refuses an element that
// overlaps one already there in part; cut this way, the elements any two calls make for one address
// under one policy are equal or disjoint, whatever names each call had, so a later answer only
// refreshes an element's timeout.
func (x *fqdnIndex) spans(names []string) []span {
	var out []span
	for _, r := range x.rules {
		if !matchesAny(r.patterns, names) {
			continue
		}
		for _, s := range r.spans {
			lo := uint32(s.lo)
			for _, c := range x.cuts {
				if c.proto == s.proto && c.at > lo && c.at <= uint32(s.hi) {
					out = append(out, span{s.proto, uint16(lo), uint16(c.at - 1)})
					lo = c.at
				}
			}
			out = append(out, span{s.proto, uint16(lo), s.hi})
		}
	}
	slices.SortFunc(out, compareSpans)
	return slices.Compact(out)
}

func matchesAny(patterns, names []string) bool {
	for _, pat := range patterns {
		for _, n := range names {
			if policy.MatchName(pat, n) {
				return true
			}
		}
	}
	return false
}

// SeenKey is an egress key the verdict loop allowed, as the seen sets hold it.
type SeenKey struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// ForgetSeen deletes keys from the egress seen sets, so that the next connection with one of them is
// queued and judged again (an address whose names expired, say). Keys not there, or a table without
// seen sets (LogAllowsAll), are no error. It must not run concurrently with Apply on the same
// connection.
func ForgetSeen(c *nftables.Conn, keys []SeenKey) error {
	if len(keys) == 0 {
		return nil
	}
	sets, err := c.GetSets(table())
	if err != nil {
		return fmt.Errorf("forget seen keys: list sets: %w", err)
	}
	var v4, v6 []nftables.SetElement
	for _, k := range keys {
		a := k.Addr.Unmap().WithZone("")
		e := nftables.SetElement{Key: addrKey(nil, addrOf(a), a.Is6(), k.Proto, k.Port)}
		if a.Is6() {
			v6 = append(v6, e)
		} else {
			v4 = append(v4, e)
		}
	}
	var todo []setSpec
	for _, s := range sets {
		switch {
		case s.Name == SetSeenEgress4 && len(v4) > 0:
			todo = append(todo, setSpec{s, v4})
		case s.Name == SetSeenEgress6 && len(v6) > 0:
			todo = append(todo, setSpec{s, v6})
		}
	}
	// A delete of a key that is not there fails the whole batch, and google/nftables has no
	// "destroy" (NFT_MSG_DESTROYSETELEM). Adding the keys first (a no-op for a key there) and deleting
	// them in the same batch leaves each key absent either way, atomically.
	for _, s := range todo {
		for _, part := range chunks(s.set, s.elems) {
			if err := c.SetAddElements(s.set, part); err != nil {
				return fmt.Errorf("forget seen keys: %w", err)
			}
			if err := c.SetDeleteElements(s.set, part); err != nil {
				return fmt.Errorf("forget seen keys: %w", err)
			}
		}
	}
	if err := c.Flush(); err == nil {
		return nil
	}
	// The batch fails as a whole when a set is full (an add of a key not there). Then each key alone:
	// a delete, where "not there" is what was wanted.
	var errs []error
	for _, s := range todo {
		for _, e := range s.elems {
			if err := c.SetDeleteElements(s.set, []nftables.SetElement{e}); err != nil {
				return fmt.Errorf("forget seen keys: %w", err)
			}
			if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("forget seen keys: %w", err)
	}
	return nil
}
