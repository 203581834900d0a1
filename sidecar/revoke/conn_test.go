package revoke

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/ti-mo/conntrack"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
)

var (
	pod  = netip.MustParseAddr("10.244.0.5")
	peer = netip.MustParseAddr("10.244.1.7")
	lo   = netip.MustParseAddr("127.0.0.1")
)

// flow is a conntrack entry opened from src to dst and answered from reply (dst unless NAT rewrote it).
func flow(proto uint8, src, dst, reply string) *conntrack.Flow {
	s, d, r := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), netip.MustParseAddrPort(reply)
	var f conntrack.Flow
	f.TupleOrig.IP.SourceAddress, f.TupleOrig.IP.DestinationAddress = s.Addr(), d.Addr()
	f.TupleOrig.Proto = conntrack.ProtoTuple{Protocol: proto, SourcePort: s.Port(), DestinationPort: d.Port()}
	f.TupleReply.IP.SourceAddress, f.TupleReply.IP.DestinationAddress = r.Addr(), s.Addr()
	f.TupleReply.Proto = conntrack.ProtoTuple{Protocol: proto, SourcePort: r.Port(), DestinationPort: s.Port()}
	return &f
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// TestConnOf checks that each entry is judged as the datapath judged its opening packet.
func TestConnOf(t *testing.T) {
	local := locals{pod}.has
	for _, tc := range []struct {
		name string
		f    *conntrack.Flow
		want decide.Conn
		ok   bool
	}{{
		name: "egress",
		f:    flow(6, "10.244.0.5:40000", "10.244.1.7:80", "10.244.1.7:80"),
		want: decide.Conn{Direction: policy.Egress, Proto: 6, Local: ap(pod, 40000), Remote: ap(peer, 80)}, ok: true,
	}, {
		name: "egress a mesh proxy redirects is judged by its real remote",
		f:    flow(6, "10.244.0.5:40000", "10.244.1.7:80", "127.0.0.1:15001"),
		want: decide.Conn{Direction: policy.Egress, Proto: 6, Local: ap(pod, 40000), Remote: ap(peer, 80)}, ok: true,
	}, {
		name: "ingress carries its original port",
		f:    flow(17, "10.244.1.7:5353", "10.244.0.5:53", "10.244.0.5:53"),
		want: decide.Conn{Direction: policy.Ingress, Proto: 17, Local: ap(pod, 53), Remote: ap(peer, 5353),
			Original: ap(pod, 53)}, ok: true,
	}, {
		name: "ingress a mesh proxy redirects",
		f:    flow(6, "10.244.1.7:40000", "10.244.0.5:8080", "10.244.0.5:15006"),
		want: decide.Conn{Direction: policy.Ingress, Proto: 6, Local: ap(pod, 15006), Remote: ap(peer, 40000),
			Original: ap(pod, 8080)}, ok: true,
	}, {
		name: "loopback",
		f:    flow(132, "127.0.0.1:40000", "127.0.0.1:15000", "127.0.0.1:15000"),
		want: decide.Conn{Direction: policy.Loopback, Proto: 132, Local: ap(lo, 40000), Remote: ap(lo, 15000),
			Original: ap(lo, 15000)}, ok: true,
	}, {
		name: "hairpin through the proxy's inbound port",
		f:    flow(6, "127.0.0.6:40000", "10.244.0.5:8080", "10.244.0.5:15006"),
		want: decide.Conn{Direction: policy.Loopback, Proto: 6, Local: ap(netip.MustParseAddr("127.0.0.6"), 40000),
			Remote: ap(pod, 15006), Original: ap(pod, 8080)}, ok: true,
	}, {
		name: "neither end is the pod's",
		f:    flow(6, "10.244.1.7:40000", "10.244.1.8:80", "10.244.1.8:80"),
	}, {
		name: "no ports",
		f:    flow(1, "10.244.0.5:0", "10.244.1.7:0", "10.244.1.7:0"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := connOf(tc.f, local)
			if ok != tc.ok {
				t.Fatalf("judged = %v, want %v", ok, tc.ok)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
				t.Fatalf("conn (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExempt(t *testing.T) {
	o := Options{SelfPorts: []uint16{9947}, Own: func(m uint32) bool { return m == 0x00100000 }}
	own := flow(6, "10.244.0.5:40000", "10.96.0.10:443", "10.96.0.10:443")
	own.Mark = 0x00100000
	probe := flow(6, "10.244.1.1:40000", "10.244.0.5:9947", "10.244.0.5:9947")
	probeUDP := flow(17, "10.244.1.1:40000", "10.244.0.5:9947", "10.244.0.5:9947")
	egressTo9947 := flow(6, "10.244.0.5:40000", "10.244.1.7:9947", "10.244.1.7:9947")
	timeWait := flow(6, "10.244.0.5:40001", "10.244.1.7:80", "10.244.1.7:80")
	timeWait.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: tcpTimeWait}
	established := flow(6, "10.244.0.5:40002", "10.244.1.7:80", "10.244.1.7:80")
	established.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: 3}
	sctpClosedFlow := flow(132, "10.244.0.5:40003", "10.244.1.7:80", "10.244.1.7:80")
	sctpClosedFlow.ProtoInfo.SCTP = &conntrack.ProtoInfoSCTP{State: sctpClosed}
	for _, tc := range []struct {
		name string
		f    *conntrack.Flow
		want bool
	}{
		{"the sidecar's own", own, true},
		{"a probe of the sidecar's port", probe, true},
		{"UDP to the sidecar's port", probeUDP, false},
		{"egress to a remote port numbered like the sidecar's", egressTo9947, false},
		{"TCP in TIME_WAIT", timeWait, true},
		{"TCP established", established, false},
		{"SCTP closed", sctpClosedFlow, true},
	} {
		c, ok := connOf(tc.f, locals{pod}.has)
		if !ok {
			t.Fatalf("%s: not the pod's", tc.name)
		}
		if got := o.exempt(tc.f, c); got != tc.want {
			t.Errorf("%s: exempt = %v, want %v", tc.name, got, tc.want)
		}
	}
}
