package ruleset

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/internal/netnstest"
)

// chainInfo is what reading a chain back through netlink tells.
type chainInfo struct {
	Hook     string
	Priority int32
	Rules    int
}

// readBack reads the podwall table through netlink: each chain with its hook and rule count, and the
// elements of each set, decoded.
func readBack(t *testing.T, ns *netnstest.NS, c *nftables.Conn) (map[string]chainInfo, map[string][]string) {
	t.Helper()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	ruleCounts := countRules(t, ns)
	gotChains := map[string]chainInfo{}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			t.Errorf("chain %s in foreign table %s", ch.Name, ch.Table.Name)
			continue
		}
		info := chainInfo{Rules: ruleCounts[ch.Name]}
		if ch.Hooknum != nil {
			info.Hook = map[nftables.ChainHook]string{*nftables.ChainHookInput: "input", *nftables.ChainHookOutput: "output"}[*ch.Hooknum]
			info.Priority = int32(*ch.Priority)
		}
		gotChains[ch.Name] = info
	}
	sets, err := c.GetSets(table())
	if err != nil {
		t.Fatal(err)
	}
	gotSets := map[string][]string{}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, e := range elems {
			out = append(out, decodeElement(s, e))
		}
		slices.Sort(out)
		gotSets[s.Name] = out
	}
	return gotChains, gotSets
}

// countRules dumps the table's rules through netlink and counts them per chain. (google/nftables
// v0.3.0 cannot decode a rule with a conntrack direction, so GetRules fails on input and loopback.)
func countRules(t *testing.T, ns *netnstest.NS) map[string]int {
	t.Helper()
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")}})
	msgs, err := nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		t.Fatalf("dump rules: %v", err)
	}
	counts := map[string]int{}
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_RULE_CHAIN {
				counts[ad.String()]++
			}
		}
	}
	return counts
}

// decodeElement renders an element as "addr[-addr] . proto . port[-port]" (fields the set has).
func decodeElement(s *nftables.Set, e nftables.SetElement) string {
	field := func(key []byte) (netip.Addr, uint8, uint16) {
		switch len(key) {
		case 2:
			return netip.Addr{}, 0, binary.BigEndian.Uint16(key)
		case 8:
			return netip.Addr{}, key[0], binary.BigEndian.Uint16(key[4:])
		}
		n := len(key) - 8
		a, _ := netip.AddrFromSlice(key[:n])
		return a, key[n], binary.BigEndian.Uint16(key[n+4:])
	}
	a, proto, port := field(e.Key)
	end := e.Key
	if len(e.KeyEnd) > 0 {
		end = e.KeyEnd
	}
	b, _, port2 := field(end)
	var parts []string
	if a.IsValid() {
		r := a.String()
		if b != a {
			r += "-" + b.String()
		}
		parts = append(parts, r)
	}
	if proto != 0 || len(e.Key) == 8 {
		parts = append(parts, fmt.Sprint(proto))
	}
	p := fmt.Sprint(port)
	if port2 != port {
		p += "-" + fmt.Sprint(port2)
	}
	return strings.Join(append(parts, p), " . ")
}
