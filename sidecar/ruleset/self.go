package ruleset

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"

	"podwall.io/podwall/api/policy"
)

// Dest is a destination the sidecar's own sockets connect to: policygen, a DNS server.
type Dest struct {
	Proto policy.Protocol
	Addr  netip.AddrPort
}

func (d Dest) String() string { return fmt.Sprintf("%s %s", d.Proto, d.Addr) }

func (d Dest) validate() error {
	if d.Proto.Number() == 0 || !d.Addr.IsValid() || d.Addr.Port() == 0 {
		return fmt.Errorf("self destination %q: want a protocol, an address and a port", d)
	}
	return nil
}

// key is d as an element of SetSelfDests4 or SetSelfDests6, and which of the two. An IPv4 address
// written as IPv6 is IPv4 on the wire; a zone is not.
func (d Dest) key() (key []byte, v6 bool) {
	a := d.Addr.Addr().Unmap().WithZone("")
	return addrKey(nil, addrOf(a), a.Is6(), d.Proto.Number(), d.Addr.Port()), a.Is6()
}

func destElements(dests []Dest) (v4, v6 []nftables.SetElement) {
	for _, d := range dests {
		if key, is6 := d.key(); is6 {
			v6 = append(v6, nftables.SetElement{Key: key})
		} else {
			v4 = append(v4, nftables.SetElement{Key: key})
		}
	}
	return v4, v6
}

// selfDestSet is a hash set of whole keys that AddSelfDest adds to between Applies.
func selfDestSet(t *nftables.Table, v6 bool) *nftables.Set {
	if v6 {
		return &nftables.Set{Table: t, Name: SetSelfDests6, KeyType: keyAddrPort6, Concatenation: true}
	}
	return &nftables.Set{Table: t, Name: SetSelfDests4, KeyType: keyAddrPort4, Concatenation: true}
}

// AddSelfDest lets the sidecar's own sockets (MarkSelf) reach d under the table in force, in one
// netlink batch that the kernel has taken when AddSelfDest returns: call it before the socket
// connects. Adding a destination already there is harmless. Apply replaces the set with
// Options.SelfDests, so the caller keeps d there too. It must not run concurrently with Apply on one
// connection.
func AddSelfDest(c *nftables.Conn, d Dest) error {
	if err := d.validate(); err != nil {
		return err
	}
	key, v6 := d.key()
	if err := c.SetAddElements(selfDestSet(table(), v6), []nftables.SetElement{{Key: key}}); err != nil {
		return fmt.Errorf("self destination %s: %w", d, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add self destination %s: %w", d, err)
	}
	return nil
}
