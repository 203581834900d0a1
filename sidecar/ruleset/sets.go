package ruleset

import (
	"fmt"
	"time"

	"github.com/google/nftables"
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

// setSpec is one set to create and the elements to put in it: elems, or keys (an allow set's, which
// are sent a chunk at a time and never all made into nftables.SetElement values).
type setSpec struct {
	set   *nftables.Set
	elems []nftables.SetElement
	keys  keyList
}

// count is the number of elements.
func (s setSpec) count() int { return len(s.elems) + s.keys.len() }

// send queues the messages that add the elements to c's batch, each message a chunk (see chunkLen);
// sent is called after each with the number of elements it held.
func (s setSpec) send(c *nftables.Conn, sent func(int) error) error {
	add := func(part []nftables.SetElement) error {
		if err := c.SetAddElements(s.set, part); err != nil {
			return fmt.Errorf("set %s: %w", s.set.Name, err)
		}
		return sent(len(part))
	}
	if s.keys.len() > 0 {
		return s.keys.chunks(chunkLen(s.set), add)
	}
	for _, part := range chunks(s.set, s.elems) {
		if err := add(part); err != nil {
			return err
		}
	}
	return nil
}

// buildSets returns every set of the table but the allow sets (Compiled.allowSpecs) with its
// elements, the FQDN elements with their time left at now. It does no I/O.
func buildSets(t *nftables.Table, c *Compiled, o Options, now time.Time) ([]setSpec, error) {
	fqdn := fqdnElements(c.fqdn, o.FQDN, now)
	if len(fqdn[0])+len(fqdn[1])+len(fqdn[2])+len(fqdn[3]) > maxElements {
		return nil, fmt.Errorf("name cache too large: more than %d FQDN set elements", maxElements)
	}
	specs := fqdn.specs(t)
	if o.usesSeen() {
		for _, s := range []struct {
			name string
			key  nftables.SetDatatype
		}{{SetSeenIngress4, keyAddrPort4}, {SetSeenIngress6, keyAddrPort6}, {SetSeenEgress4, keyAddrPort4}, {SetSeenEgress6, keyAddrPort6}} {
			specs = append(specs, setSpec{set: dynamicSet(t, s.name, s.key, o.SeenTimeout, seenSize)})
		}
	}
	if o.usesDenyMemo(c.mode) {
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
		setSpec{set: intervalSet(t, SetLoopbackDeny, keyProtoPort), elems: spanElements(c.loopback)},
	)
	if o.observesDNS() {
		specs = append(specs, dnsSets(t, o.DNSServers)...)
	}
	return specs, nil
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

// boxKeys encodes boxes as elements: those of one address and one port as a key alone (for an exact
// set), the others with a start and an end key (for an interval set). Every field of a concatenated
// key takes a multiple of four bytes (one register each): address, protocol + 3 bytes of padding,
// port in network order + 2 bytes of padding.
func boxKeys(boxes []box, v6 bool) (ranges, exact keyList) {
	keyLen := len(addrKey(nil, addr{}, v6, 0, 0))
	n := 0
	for _, b := range boxes {
		if b.lo == b.hi && b.span.lo == b.span.hi {
			n++
		}
	}
	ranges = keyList{data: make([]byte, 0, 2*keyLen*(len(boxes)-n)), keyLen: keyLen, ranges: true}
	exact = keyList{data: make([]byte, 0, keyLen*n), keyLen: keyLen}
	for _, b := range boxes {
		if b.lo == b.hi && b.span.lo == b.span.hi {
			exact.data = addrKey(exact.data, b.lo, v6, b.proto, b.span.lo)
			continue
		}
		ranges.data = addrKey(ranges.data, b.lo, v6, b.proto, b.span.lo)
		ranges.data = addrKey(ranges.data, b.hi, v6, b.proto, b.span.hi)
	}
	return ranges, exact
}

// boxElements is boxKeys' elements as slices, for a few boxes (an FQDN answer's).
func boxElements(boxes []box, v6 bool) (ranges, exact []nftables.SetElement) {
	r, x := boxKeys(boxes, v6)
	return r.elements(), x.elements()
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

// chunkLen is how many elements of set s fit in one message: their netlink encoding must stay under
// the 64 KiB an attribute can hold, or the nested attribute's 16-bit length would overflow.
func chunkLen(s *nftables.Set) int {
	const budget = 60000
	return budget / elementBytes(s)
}

// elementBytes bounds the netlink encoding of one element of s: item header, key and key end, each
// nested twice.
func elementBytes(s *nftables.Set) int { return 4 + 2*(8+int(s.KeyType.Bytes)) }

// chunks splits elements into groups of chunkLen.
func chunks(s *nftables.Set, elems []nftables.SetElement) [][]nftables.SetElement {
	n := chunkLen(s)
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
