package revoke

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
)

// Options say what Revoke leaves alone and where it reports.
type Options struct {
	// SelfPorts are the sidecar's own TCP ports, which the ruleset opens to ingress in every mode.
	SelfPorts []uint16
	// Own says whether a connection mark is that of one of the sidecar's own connections (to policygen,
	// DNS), which no policy judges; nil means none is. The ruleset owns the marks (ruleset.SelfConn).
	Own func(ctMark uint32) bool
	// Log writes the verdict line of each connection cut; its Decision carries verdict Revoked.
	Log func(decide.Conn, decide.Decision)
	// Names returns the names the pod resolved an address from (decide.Conn.Names), which an egress
	// connection is judged with; nil means none. A connection to an address whose names have expired
	// is judged without them.
	Names func(netip.Addr) []string
}

// Revoke cuts every connection of the network namespace netnsFD (0: the caller's) that d denies, and
// returns how many it cut. A connection that ends by itself meanwhile is not counted. It goes on past
// an entry it fails to delete and returns the failures together.
func Revoke(netnsFD int, d *decide.Decider, o Options) (int, error) {
	local, err := localAddrs(netnsFD)
	if err != nil {
		return 0, err
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: netnsFD})
	if err != nil {
		return 0, fmt.Errorf("dial conntrack: %w", err)
	}
	defer ct.Close()
	flows, err := ct.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("dump conntrack: %w", err)
	}
	n := 0
	var errs []error
	for i := range flows {
		f := &flows[i]
		c, ok := connOf(f, local.has)
		if !ok || o.exempt(f, c) {
			continue
		}
		if c.Direction == policy.Egress && o.Names != nil {
			c.Names = o.Names(c.Remote.Addr())
		}
		dec := d.Decide(c)
		if dec.Verdict != policy.Deny {
			continue
		}
		err := ct.Delete(conntrack.Flow{TupleOrig: f.TupleOrig, TupleReply: f.TupleReply, Zone: f.Zone})
		switch {
		case errors.Is(err, unix.ENOENT):
			continue // over meanwhile
		case err != nil:
			errs = append(errs, fmt.Errorf("delete %s: %w", f.TupleOrig, err))
			continue
		}
		n++
		dec.Verdict = policy.Revoked
		if o.Log != nil {
			o.Log(c, dec)
		}
	}
	return n, errors.Join(errs...)
}
