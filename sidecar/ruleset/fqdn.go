package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// fqdnSets are the FQDN sets of a family, as the allow sets are split: ranges (pipapo), and the keys
// of one port (the common case: a rule on 443) in a hash set, where an insert costs the same whatever
// the set holds (a pipapo insert copies the set's whole lookup table, and a DNS answer waits for it).
// Their elements time out one by one.
func fqdnSets(t *nftables.Table, v6 bool) (ranges, exact *nftables.Set) {
	name, key := SetFQDNEgress4, keyAddrPort4
	if v6 {
		name, key = SetFQDNEgress6, keyAddrPort6
	}
	ranges = intervalSet(t, name, key)
	ranges.HasTimeout = true
	exact = &nftables.Set{Table: t, Name: name + exactSuffix, KeyType: key, Concatenation: true, HasTimeout: true}
	return ranges, exact
}

// fqdnFamilies is the elements of the four FQDN sets: IPv4 ranges, IPv4 keys, IPv6 ranges, IPv6 keys.
type fqdnFamilies [4][]nftables.SetElement

// specs returns the four sets with their elements.
func (f *fqdnFamilies) specs(t *nftables.Table) []setSpec {
	r4, x4 := fqdnSets(t, false)
	r6, x6 := fqdnSets(t, true)
	return []setSpec{{set: r4, elems: f[0]}, {set: x4, elems: f[1]}, {set: r6, elems: f[2]}, {set: x6, elems: f[3]}}
}

// AddFQDN adds, in one batch that the kernel has taken when it returns, for each address of addrs
// (one DNS answer's), the elements of every egress rule of c (the policy of the last Apply) with a
// pattern matching one of its Names, for the rule's ports, with timeout Expires-now. An element there
// already gets the new timeout, longer or shorter: the caller passes the expiry the names give the
// address. An address no rule's pattern matches, or an expired one, adds nothing. It must not run
// concurrently with Apply on the same connection.
func AddFQDN(c *nftables.Conn, p *Compiled, addrs []FQDNAddr, now time.Time) error {
	if p == nil {
		return nil
	}
	var f fqdnFamilies
	for _, a := range addrs {
		if a.Addr.IsValid() {
			f.add(p.fqdn, a, now)
		}
	}
	n := 0
	for _, s := range f.specs(table()) { // a TCP answer may carry thousands of records
		n += s.count()
		if err := s.send(c, func(int) error { return nil }); err != nil {
			return fmt.Errorf("FQDN %w", err)
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add FQDN addresses: %w", err)
	}
	return nil
}

// fqdnElements returns the elements of the FQDN sets for the addresses of a name cache under x, as
// timeouts left at now. An address listed twice keeps, per element, the latest expiry.
func fqdnElements(x *fqdnIndex, addrs []FQDNAddr, now time.Time) fqdnFamilies {
	var all fqdnFamilies
	seen := map[string]int{} // key and key end → index in its set's list
	for _, a := range addrs {
		var f fqdnFamilies
		f.add(x, a, now)
		for i := range f {
			for _, e := range f[i] {
				id := string(e.Key) + string(e.KeyEnd)
				if j, ok := seen[id]; ok {
					all[i][j].Timeout = max(all[i][j].Timeout, e.Timeout)
					continue
				}
				seen[id] = len(all[i])
				all[i] = append(all[i], e)
			}
		}
	}
	return all
}

// add appends the elements of a under x's rules, with a's time left at now as their timeout (none if
// it has expired): one per span of the rules whose patterns match a's names, as the allow sets encode
// them (boxElements), a span of one port as a key alone.
func (f *fqdnFamilies) add(x *fqdnIndex, a FQDNAddr, now time.Time) {
	ip := a.Addr.Unmap().WithZone("")
	left := a.Expires.Sub(now)
	if left < time.Millisecond {
		return
	}
	spans := x.spans(a.Names)
	if len(spans) == 0 {
		return
	}
	boxes := make([]box, len(spans))
	for i, s := range spans {
		boxes[i] = box{lo: addrOf(ip), hi: addrOf(ip), span: s}
	}
	ranges, exact := boxElements(boxes, ip.Is6())
	i := 0
	if ip.Is6() {
		i = 2
	}
	for _, e := range ranges {
		e.Timeout = left
		f[i] = append(f[i], e)
	}
	for _, e := range exact {
		e.Timeout = left
		f[i+1] = append(f[i+1], e)
	}
}

// fqdnIndex is what the FQDN elements need of a policy: its FQDN rules, and the bounds of all their
// spans. A policy may have 100,000 address rules and a handful of FQDN rules; AddFQDN runs while a DNS
// answer waits, so it must not walk them all: a Compiled holds the index, built once (add, done).
type fqdnIndex struct {
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

// spans returns the port spans of the FQDN rules with a pattern matching one of names, cut at every
// bound of every FQDN rule's spans. The kernel's set for concatenated ranges refuses an element that
// overlaps one already there in part; cut this way, the elements any two calls make for one address
// under one policy are equal or disjoint, whatever names each call had, so a later answer only
// refreshes an element's timeout.
func (x *fqdnIndex) spans(names []string) []span {
	var out []span
	for _, r := range x.rules {
		if _, ok := policy.MatchAny(r.patterns, names); !ok {
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
			todo = append(todo, setSpec{set: s, elems: v4})
		case s.Name == SetSeenEgress6 && len(v6) > 0:
			todo = append(todo, setSpec{set: s, elems: v6})
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
