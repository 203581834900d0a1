package revoke

import (
	"net/netip"
	"slices"

	"github.com/ti-mo/conntrack"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/packet"
)

// Conntrack's TCP and SCTP states of a connection that is over (TCP_CONNTRACK_TIME_WAIT and
// TCP_CONNTRACK_CLOSE, SCTP_CONNTRACK_CLOSED): no data flows any more, so there is nothing to cut.
const (
	tcpTimeWait = 7
	tcpClose    = 8
	sctpClosed  = 1
)

// connOf rebuilds the connection the datapath judged when f opened, and says whether f is the pod's
// at all: one of its ends must be local (the pod's interface addresses, or loopback).
func connOf(f *conntrack.Flow, local func(netip.Addr) bool) (decide.Conn, bool) {
	o, r := f.TupleOrig, f.TupleReply
	proto := o.Proto.Protocol
	if !packet.HasPorts(proto) {
		return decide.Conn{}, false
	}
	src := netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort)
	dst := netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort)
	// The reply comes from where the connection was delivered: its destination after any NAT.
	delivered := netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort)
	c := decide.Conn{Proto: proto}
	switch {
	case local(src.Addr()) && local(dst.Addr()):
		// The loopback chain sees the delivered destination and keys on the original one.
		c.Direction, c.Local, c.Remote, c.Original = policy.Loopback, src, delivered, dst
	case local(src.Addr()):
		// Egress is judged at output, before NAT: by the remote the app asked for.
		c.Direction, c.Local, c.Remote = policy.Egress, src, dst
	case local(delivered.Addr()):
		// Ingress is judged at input, after NAT, with the original port (the ruleset hands it over in
		// the packet mark).
		c.Direction, c.Local, c.Remote = policy.Ingress, delivered, src
		c.Original = netip.AddrPortFrom(delivered.Addr(), dst.Port())
	default:
		return decide.Conn{}, false
	}
	return c, true
}

// exempt says whether the ruleset lets f through whatever the policy says, or f is over.
func (o *Options) exempt(f *conntrack.Flow, c decide.Conn) bool {
	switch {
	case o.Own != nil && o.Own(f.Mark):
		return true
	case c.Direction == policy.Ingress && c.Proto == packet.ProtoTCP && slices.Contains(o.SelfPorts, c.Local.Port()):
		return true
	case f.ProtoInfo.TCP != nil:
		return f.ProtoInfo.TCP.State == tcpTimeWait || f.ProtoInfo.TCP.State == tcpClose
	case f.ProtoInfo.SCTP != nil:
		return f.ProtoInfo.SCTP.State == sctpClosed
	}
	return false
}
