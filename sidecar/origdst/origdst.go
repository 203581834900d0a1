// Package origdst recovers the destination a connection had before a mesh proxy's REDIRECT rewrote it
// to the proxy's local port, so that the app→proxy connection is judged and logged against the real
// remote. This kernel gives NFQUEUE no conntrack data (NfQaCfgFlagConntrack is refused), so the entry is
// read through conntrack's own netlink API, looked up by its reply tuple: the one tuple we can build
// from the redirected packet alone. The entry must be confirmed, which it is once the packet reaches the
// input hook of the loopback interface — where the ruleset queues these connections.
package origdst

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ErrNotFound means the kernel has no connection with that tuple.
var ErrNotFound = errors.New("no conntrack entry")

// Table reads the conntrack table of one network namespace. It is safe for concurrent use.
type Table struct {
	mu sync.Mutex
	c  *conntrack.Conn
}

// Open connects to the conntrack table of the namespace netns refers to (0: the current namespace).
func Open(netns int) (*Table, error) {
	c, err := conntrack.Dial(&netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("dial conntrack: %w", err)
	}
	return &Table{c: c}, nil
}

// Close releases the netlink socket.
func (t *Table) Close() error { return t.c.Close() }

// Original returns the original destination of the connection whose packet went from src to dst after
// NAT. For a connection no NAT touched it returns dst.
func (t *Table) Original(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, error) {
	var q conntrack.Flow
	// The reply tuple of a redirected connection runs from the proxy's address back to the client.
	q.TupleReply.IP.SourceAddress = dst.Addr()
	q.TupleReply.IP.DestinationAddress = src.Addr()
	q.TupleReply.Proto.Protocol = proto
	q.TupleReply.Proto.SourcePort = dst.Port()
	q.TupleReply.Proto.DestinationPort = src.Port()
	t.mu.Lock()
	f, err := t.c.Get(q)
	t.mu.Unlock()
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("%s → %s: %w", src, dst, ErrNotFound)
		}
		return netip.AddrPort{}, fmt.Errorf("conntrack get %s → %s: %w", src, dst, err)
	}
	o := f.TupleOrig
	return netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort), nil
}
