package ruleset

import (
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
)

// The sets of the podwall table. Peers live only in sets, so the number of rules never depends on the
// size of the policy and the cost per packet stays flat (one hash or pipapo lookup).
const (
	// SetAllowIngress4 and its siblings hold what the policy allows, as elements
	// "address range . protocol . port range" (the kernel's pipapo set for concatenated ranges).
	// Ingress sets match the remote source and the ORIGINAL destination port, egress sets the remote
	// destination and port.
	SetAllowIngress4 = "allow_ingress4"
	SetAllowIngress6 = "allow_ingress6"
	SetAllowEgress4  = "allow_egress4"
	SetAllowEgress6  = "allow_egress6"
	// SetAllowIngress4Exact and its siblings hold the allowed keys of one address and one port, the
	// bulk of a large policy, in a hash set: the kernel fills a hash set several times faster than a
	// pipapo set, and a lookup costs about the same. A packet is allowed if either set matches.
	SetAllowIngress4Exact = SetAllowIngress4 + exactSuffix
	SetAllowIngress6Exact = SetAllowIngress6 + exactSuffix
	SetAllowEgress4Exact  = SetAllowEgress4 + exactSuffix
	SetAllowEgress6Exact  = SetAllowEgress6 + exactSuffix
	// SetSeenIngress4 and its siblings remember, for Options.SeenTimeout, the keys of connections the
	// verdict loop allowed, so that repeat connections are accepted in the kernel (LogAllowsFirst and
	// LogAllowsNone only).
	SetSeenIngress4 = "seen_ingress4"
	SetSeenIngress6 = "seen_ingress6"
	SetSeenEgress4  = "seen_egress4"
	SetSeenEgress6  = "seen_egress6"
	// SetDenyMemoIngress4 and its siblings remember, for Options.DenyMemoTimeout, the keys of
	// connections the verdict loop denied (Protect only), so that a flood of connections to a denied key
	// is refused in the kernel and the queue stays free for new keys.
	SetDenyMemoIngress4 = "deny_memo_ingress4"
	SetDenyMemoIngress6 = "deny_memo_ingress6"
	SetDenyMemoEgress4  = "deny_memo_egress4"
	SetDenyMemoEgress6  = "deny_memo_egress6"
	// SetFQDNEgress4 and SetFQDNEgress6 hold "address . protocol . port range" of the addresses DNS
	// answers gave for names the policy's FQDN rules (Rule.Names) allow, for those rules' ports, each
	// element with the answer's time to live as its timeout (AddFQDN, Options.FQDN). They are consulted
	// where the allow sets are. As the allow sets, they are split: the keys of one port go in
	// SetFQDNEgress4Exact and SetFQDNEgress6Exact, hash sets, whose insert (a DNS answer waits for it)
	// costs the same whatever the set holds.
	SetFQDNEgress4      = "fqdn_egress4"
	SetFQDNEgress6      = "fqdn_egress6"
	SetFQDNEgress4Exact = SetFQDNEgress4 + exactSuffix
	SetFQDNEgress6Exact = SetFQDNEgress6 + exactSuffix
	// SetDNSPorts holds the ports of Options.DNSServers: the one cheap match that sends a packet on to
	// the DNS chains; SetDNSServers4 and SetDNSServers6 hold the servers as "address . protocol . port",
	// UDP and TCP.
	SetDNSPorts    = "dns_ports"
	SetDNSServers4 = "dns_servers4"
	SetDNSServers6 = "dns_servers6"
	// SetSelfPorts holds the sidecar's own TCP ports, open to ingress in every mode.
	SetSelfPorts = "self_ports"
	// SetSelfDests4 and SetSelfDests6 hold "address . protocol . port" of the destinations the
	// sidecar's own sockets connect to (Options.SelfDests, AddSelfDest): the only ones MarkSelf
	// passes to.
	SetSelfDests4 = "self_dests4"
	SetSelfDests6 = "self_dests6"
	// SetLoopbackDeny holds "protocol . port range" of the in-pod ports the policy's loopback deny
	// rules forbid.
	SetLoopbackDeny = "loopback_deny"
)

const (
	exactSuffix = "_exact"
	// maxElements bounds the elements of one Apply (about 70 MB of netlink messages at most).
	maxElements = 1 << 20
	// maxWork bounds the effort of making a set's elements disjoint (see disjoint).
	maxWork = 4 << 20
	// seenSize bounds each seen set. When one is full the kernel stops adding to it and repeat
	// connections are queued again: slower, never wrong.
	seenSize = 65536
	// denyMemoSize bounds each deny memo set the same way: when one is full, denied keys are queued
	// (and decided, and refused) again.
	denyMemoSize = 65536
	// sndBuf is the netlink send buffer Dial asks for: one batch of maxElements fits.
	sndBuf = 128 << 20
)

var (
	keyAddrPort4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	keyAddrPort6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	keyProtoPort = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
)

// setSpec is one set to create and the elements to put in it.
type setSpec struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// buildSets returns every set of the table with its elements, the FQDN elements with their time left
// at now. It does no I/O.
func buildSets(t *nftables.Table, p *policy.Policy, o Options, now time.Time) ([]setSpec, error) {
	specs, err := allowSets(t, p)
	if err != nil {
		return nil, err
	}
	fqdn := fqdnElements(p, o.FQDN, now)
	if len(fqdn[0])+len(fqdn[1])+len(fqdn[2])+len(fqdn[3]) > maxElements {
		return nil, fmt.Errorf("name cache too large: more than %d FQDN set elements", maxElements)
	}
	specs = append(specs, fqdn.specs(t)...)
	if o.usesSeen() {
		for _, s := range []struct {
			name string
			key  nftables.SetDatatype
		}{{SetSeenIngress4, keyAddrPort4}, {SetSeenIngress6, keyAddrPort6}, {SetSeenEgress4, keyAddrPort4}, {SetSeenEgress6, keyAddrPort6}} {
			specs = append(specs, setSpec{set: dynamicSet(t, s.name, s.key, o.SeenTimeout, seenSize)})
		}
	}
	if o.usesDenyMemo(p.Mode) {
		for _, s := range []struct {
			name string
			key  nftables.SetDatatype
		}{{SetDenyMemoIngress4, keyAddrPort4}, {SetDenyMemoIngress6, keyAddrPort6}, {SetDenyMemoEgress4, keyAddrPort4}, {SetDenyMemoEgress6, keyAddrPort6}} {
			specs = append(specs, setSpec{set: dynamicSet(t, s.name, s.key, o.DenyMemoTimeout, denyMemoSize)})
		}
	}
	self4, self6 := destElements(o.SelfDests)
	specs = append(specs,
		setSpec{set: portSet(t, SetSelfPorts), elems: portElements(o.SelfPorts)},
		setSpec{set: selfDestSet(t, false), elems: self4},
		setSpec{set: selfDestSet(t, true), elems: self6},
		setSpec{set: intervalSet(t, SetLoopbackDeny, keyProtoPort), elems: spanElements(loopbackSpans(p.Loopback))},
	)
	if o.observesDNS() {
		specs = append(specs, dnsSets(t, o.DNSServers)...)
	}
	return specs, nil
}

// allowFamily is the allow sets of one direction and address family: the input boxes, and what
// building them yields.
type allowFamily struct {
	ranges, exact string // set names
	v6            bool
	boxes         []box
	out           [2]setSpec
	err           error
}

// allowSets builds the allow sets, the four directions and families in parallel: their elements are
// the bulk of the work of an Apply.
func allowSets(t *nftables.Table, p *policy.Policy) ([]setSpec, error) {
	in4, in6 := ruleBoxes(p.Ingress)
	out4, out6 := ruleBoxes(p.Egress)
	fams := []allowFamily{
		{ranges: SetAllowIngress4, exact: SetAllowIngress4Exact, boxes: in4},
		{ranges: SetAllowIngress6, exact: SetAllowIngress6Exact, v6: true, boxes: in6},
		{ranges: SetAllowEgress4, exact: SetAllowEgress4Exact, boxes: out4},
		{ranges: SetAllowEgress6, exact: SetAllowEgress6Exact, v6: true, boxes: out6},
	}
	var wg sync.WaitGroup
	for i := range fams {
		wg.Go(func() { fams[i].build(t) })
	}
	wg.Wait()
	var specs []setSpec
	total := 0
	for _, f := range fams {
		if f.err != nil {
			return nil, f.err
		}
		if total += len(f.out[0].elems) + len(f.out[1].elems); total > maxElements {
			return nil, fmt.Errorf("policy too large: more than %d set elements", maxElements)
		}
		specs = append(specs, f.out[:]...)
	}
	return specs, nil
}

func (f *allowFamily) build(t *nftables.Table) {
	key := keyAddrPort4
	if f.v6 {
		key = keyAddrPort6
	}
	boxes, err := disjoint(f.boxes, maxWork)
	if err != nil {
		f.err = fmt.Errorf("set %s: %w", f.ranges, err)
		return
	}
	if len(boxes) > maxElements { // before encoding them
		f.err = fmt.Errorf("policy too large: more than %d set elements", maxElements)
		return
	}
	ranges, exact := boxElements(boxes, f.v6)
	f.out = [2]setSpec{{set: intervalSet(t, f.ranges, key), elems: ranges},
		{set: exactSet(t, f.exact, key, len(exact)), elems: exact}}
}

// intervalSet is a set of concatenated ranges: the kernel backs it with pipapo, whose lookup cost does
// not grow with the number of elements in any way a packet would notice.
func intervalSet(t *nftables.Table, name string, key nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: key, Interval: true, Concatenation: true}
}

// exactSet is a hash set of whole keys. Its size is the number of elements it gets: a set of known
// size is a fixed-size hash table in the kernel (nft_hash), which fills about a third faster than
// the resizable one. The table is replaced as a whole, so the set never grows.
func exactSet(t *nftables.Table, name string, key nftables.SetDatatype, size int) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: key, Concatenation: true, Size: uint32(size)}
}

// dynamicSet is a hash set of at most size keys that the ruleset adds keys to from the packet path,
// each key expiring after timeout.
func dynamicSet(t *nftables.Table, name string, key nftables.SetDatatype, timeout time.Duration, size uint32) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: key, Concatenation: true, Dynamic: true,
		HasTimeout: true, Timeout: timeout, Size: size}
}

func portSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeInetService}
}

// boxElements encodes boxes as elements: those of one address and one port as a key alone (for an
// exact set), the others with a start and an end key (for an interval set). Every field of a
// concatenated key takes a multiple of four bytes (one register each): address, protocol + 3 bytes of
// padding, port in network order + 2 bytes of padding.
func boxElements(boxes []box, v6 bool) (ranges, exact []nftables.SetElement) {
	keyLen := len(addrKey(nil, addr{}, v6, 0, 0))
	buf := make([]byte, 0, 2*keyLen*len(boxes)) // one allocation for every key
	key := func(a addr, proto uint8, port uint16) []byte {
		buf = addrKey(buf, a, v6, proto, port)
		return buf[len(buf)-keyLen : len(buf) : len(buf)]
	}
	n := 0
	for _, b := range boxes {
		if b.lo == b.hi && b.span.lo == b.span.hi {
			n++
		}
	}
	ranges = make([]nftables.SetElement, 0, len(boxes)-n)
	exact = make([]nftables.SetElement, 0, n)
	for _, b := range boxes {
		start := key(b.lo, b.proto, b.span.lo)
		if b.lo == b.hi && b.span.lo == b.span.hi {
			exact = append(exact, nftables.SetElement{Key: start})
			continue
		}
		ranges = append(ranges, nftables.SetElement{Key: start, KeyEnd: key(b.hi, b.proto, b.span.hi)})
	}
	return ranges, exact
}

// addrKey appends "address . protocol . port" to b as the kernel's registers hold it.
func addrKey(b []byte, a addr, v6 bool, proto uint8, port uint16) []byte {
	return append(appendAddr(b, a, v6), proto, 0, 0, 0, byte(port>>8), byte(port), 0, 0)
}

func spanElements(spans []span) []nftables.SetElement {
	elems := make([]nftables.SetElement, len(spans))
	for i, s := range spans {
		elems[i] = nftables.SetElement{Key: []byte{s.proto, 0, 0, 0, byte(s.lo >> 8), byte(s.lo), 0, 0},
			KeyEnd: []byte{s.proto, 0, 0, 0, byte(s.hi >> 8), byte(s.hi), 0, 0}}
	}
	return elems
}

func portElements(ports []uint16) []nftables.SetElement {
	seen := map[uint16]bool{}
	var elems []nftables.SetElement
	for _, p := range ports {
		if !seen[p] {
			seen[p] = true
			elems = append(elems, nftables.SetElement{Key: []byte{byte(p >> 8), byte(p)}})
		}
	}
	return elems
}

// chunks splits elements into groups whose netlink encoding stays under the 64 KiB an attribute can
// hold: a larger list would overflow the nested attribute's 16-bit length.
func chunks(s *nftables.Set, elems []nftables.SetElement) [][]nftables.SetElement {
	const budget = 60000
	per := 4 + 2*(8+int(s.KeyType.Bytes)) // item header, key and key end, each nested twice
	n := budget / per
	var out [][]nftables.SetElement
	for len(elems) > n {
		out = append(out, elems[:n])
		elems = elems[n:]
	}
	if len(elems) > 0 {
		out = append(out, elems)
	}
	return out
}
