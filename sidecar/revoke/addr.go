package revoke

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// locals are the addresses of the namespace's interfaces.
type locals []netip.Addr

// has says whether a is the pod's own: an interface address or loopback.
func (l locals) has(a netip.Addr) bool { return a.IsLoopback() || slices.Contains(l, a) }

// ifaddrmsgLen is the size of struct ifaddrmsg, which leads every RTM_NEWADDR message.
const ifaddrmsgLen = 8

// localAddrs lists the addresses of the interfaces of the namespace netnsFD (0: the caller's).
func localAddrs(netnsFD int) (locals, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETADDR, Flags: netlink.Request | netlink.Dump},
		Data:   make([]byte, ifaddrmsgLen), // family AF_UNSPEC: both
	})
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var l locals
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < ifaddrmsgLen {
			continue
		}
		if a, ok := localAddr(m.Data[ifaddrmsgLen:]); ok {
			l = append(l, a)
		}
	}
	return l, nil
}

// localAddr reads an address message's own address: IFA_LOCAL where there is one (on a point-to-point
// link IFA_ADDRESS is the peer's), else IFA_ADDRESS.
func localAddr(attrs []byte) (netip.Addr, bool) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return netip.Addr{}, false
	}
	var addr, loc netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_ADDRESS:
			addr, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_LOCAL:
			loc, _ = netip.AddrFromSlice(ad.Bytes())
		}
	}
	if loc.IsValid() {
		return loc, true
	}
	return addr, addr.IsValid()
}
