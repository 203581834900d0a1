package ruleset

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
)

// Compiled is a policy as the ruleset enforces it: the elements of its allow sets, encoded once, and
// what else of the policy the chains and sets depend on (its mode, whether it restricts DNS, its
// loopback deny ports and its FQDN rules). It is built once per policy (Compile, or a Builder that
// policy.Stream hands the rules to one at a time, so that a large policy is never held whole) and
// applied as often as needed (Compiled.Apply: the first time, after tampering, when the mode floor
// changes, as the fail-closed exit). It holds a large policy's peers in a fraction of the memory of
// its rules. It is immutable.
type Compiled struct {
	mode        policy.Mode
	restrictDNS bool
	loopback    []span
	fqdn        *fqdnIndex
	// allow are the allow sets' elements, by allowFamilies.
	allow [len(allowFamilies)]familyKeys
}

// familyKeys are one allow family's elements: ranges (pipapo) and single keys (hash).
type familyKeys struct{ ranges, exact keyList }

// allowFamilies are the allow sets of each direction and address family: the range set's name (the
// exact set's adds exactSuffix), the family, and the rules' direction.
var allowFamilies = [...]struct {
	name string
	v6   bool
	dir  policy.Direction
}{
	{SetAllowIngress4, false, policy.Ingress},
	{SetAllowIngress6, true, policy.Ingress},
	{SetAllowEgress4, false, policy.Egress},
	{SetAllowEgress6, true, policy.Egress},
}

// Compile builds the Compiled form of p (nil: the deny-all baseline, Protect without rules), which it
// validates. It shares p's FQDN rules' name patterns.
func Compile(p *policy.Policy) (*Compiled, error) {
	if p == nil {
		p = &policy.Policy{Mode: policy.Protect}
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	var b Builder
	if err := p.EachRule(b.Add); err != nil {
		return nil, err
	}
	return b.Build(p)
}

// WithMode returns c enforcing mode m instead of its policy's (the agent's mode floor); it shares c's
// elements.
func (c *Compiled) WithMode(m policy.Mode) *Compiled {
	if m == c.mode {
		return c
	}
	w := *c
	w.mode = m
	return &w
}

// Builder compiles a policy one rule at a time: of each rule it keeps the boxes (addresses times
// ports) the allow sets need and, for an FQDN rule, its name patterns and ports. The zero Builder is
// ready to use; it builds one Compiled.
type Builder struct {
	boxes [len(allowFamilies)][]box
	fqdn  fqdnIndex
	n     int // boxes so far, every family
}

// Add takes r, the next rule of direction dir (policy.Ingress or policy.Egress) in policy order,
// which the caller has validated (policy.Stream does); it fits policy.Stream's rule func. It fails
// only for a policy whose rules expand into more boxes than Build could make disjoint.
func (b *Builder) Add(dir policy.Direction, r policy.Rule) error {
	fam := 0
	if dir == policy.Egress {
		fam = 2
		if len(r.Names) > 0 {
			b.fqdn.add(r)
		}
	}
	spans := ruleSpans(r.Ports)
	for _, c := range r.CIDRs {
		if c.Addr().Is4In6() && c.Bits() >= 96 { // an IPv4 peer written as IPv6: packets carry IPv4
			c = netip.PrefixFrom(c.Addr().Unmap(), c.Bits()-96)
		}
		lo, hi := prefixRange(c)
		f := fam
		if c.Addr().Is6() {
			f++
		}
		for _, s := range spans {
			b.boxes[f] = append(b.boxes[f], box{lo: lo, hi: hi, span: s})
		}
		if b.n += len(spans); b.n > maxWork {
			return fmt.Errorf("policy too large: more than %d addresses times ports", maxWork)
		}
	}
	return nil
}

// Build returns the policy compiled from the rules added and from p's mode, DNS restriction and
// loopback rules (p's own Ingress and Egress are not read: policy.Stream returns p without them). It
// fails for a policy too large for the kernel's sets. The allow families are built in parallel: their
// elements are the bulk of the work.
func (b *Builder) Build(p *policy.Policy) (*Compiled, error) {
	c := &Compiled{mode: p.Mode, restrictDNS: p.RestrictDNS, loopback: loopbackSpans(p.Loopback), fqdn: b.fqdn.done()}
	var errs [len(allowFamilies)]error
	var wg sync.WaitGroup
	for i, f := range allowFamilies {
		wg.Go(func() {
			boxes, err := disjoint(b.boxes[i], maxWork)
			b.boxes[i] = nil // sorted in place, or copied: drop it as soon as the elements are made
			if err != nil {
				errs[i] = fmt.Errorf("set %s: %w", f.name, err)
				return
			}
			if len(boxes) > maxElements { // before encoding them
				errs[i] = fmt.Errorf("policy too large: more than %d set elements", maxElements)
				return
			}
			c.allow[i].ranges, c.allow[i].exact = boxKeys(boxes, f.v6)
		})
	}
	wg.Wait()
	total := 0
	for i, k := range c.allow {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if total += k.ranges.len() + k.exact.len(); total > maxElements {
			return nil, fmt.Errorf("policy too large: more than %d set elements", maxElements)
		}
	}
	b.n = 0
	return c, nil
}

// allowSpecs returns the allow sets with their elements, each name followed by suffix (see
// Compiled.Apply).
func (c *Compiled) allowSpecs(t *nftables.Table, suffix string) []setSpec {
	var specs []setSpec
	for i, f := range allowFamilies {
		key := keyAddrPort4
		if f.v6 {
			key = keyAddrPort6
		}
		k := c.allow[i]
		specs = append(specs,
			setSpec{set: intervalSet(t, f.name+suffix, key), keys: k.ranges},
			setSpec{set: exactSet(t, f.name+suffix+exactSuffix, key, k.exact.len()), keys: k.exact})
	}
	return specs
}

// keyList is set elements encoded end to end as the kernel takes them: each a key of keyLen bytes
// (exact), or a key and a key end (ranges). 100k elements take 1.2 MB (IPv4 keys) this way, where as
// nftables.SetElement values they would take 15.
type keyList struct {
	data   []byte
	keyLen int
	ranges bool
}

// step is the bytes of one element.
func (l keyList) step() int {
	if l.ranges {
		return 2 * l.keyLen
	}
	return l.keyLen
}

func (l keyList) len() int {
	if l.keyLen == 0 {
		return 0
	}
	return len(l.data) / l.step()
}

// chunks calls fn with the elements, n at a time, in one slice it reuses: fn must not keep it (an
// nftables batch encodes what it is given at once). The keys share l's bytes.
func (l keyList) chunks(n int, fn func([]nftables.SetElement) error) error {
	buf := make([]nftables.SetElement, 0, min(n, l.len()))
	step := l.step()
	for off := 0; off < len(l.data); off += step {
		e := nftables.SetElement{Key: l.data[off : off+l.keyLen : off+l.keyLen]}
		if l.ranges {
			e.KeyEnd = l.data[off+l.keyLen : off+step : off+step]
		}
		if buf = append(buf, e); len(buf) == n {
			if err := fn(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		return fn(buf)
	}
	return nil
}

// elements returns the elements as a slice of their own, for a list of a few (boxElements).
func (l keyList) elements() []nftables.SetElement {
	out := make([]nftables.SetElement, 0, l.len())
	l.chunks(max(l.len(), 1), func(es []nftables.SetElement) error {
		out = append(out, es...)
		return nil
	})
	return out
}

// done returns the index of the FQDN rules added, its cuts sorted, and resets x.
func (x *fqdnIndex) done() *fqdnIndex {
	out := *x
	slices.SortFunc(out.cuts, func(a, b cut) int { return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.at, b.at)) })
	*x = fqdnIndex{}
	return &out
}

// add indexes r, an egress rule with name patterns.
func (x *fqdnIndex) add(r policy.Rule) {
	spans := ruleSpans(r.Ports)
	x.rules = append(x.rules, fqdnRule{patterns: r.Names, spans: spans})
	for _, s := range spans {
		x.cuts = append(x.cuts, cut{s.proto, uint32(s.lo)}, cut{s.proto, uint32(s.hi) + 1})
	}
}
