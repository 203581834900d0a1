package ruleset

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"podwall.io/podwall/api/policy"
)

// The DNS chains, jumped to only for packets to or from a port of Options.DNSServers.
const (
	// ChainDNSOutput sends the pod's queries to its resolvers to Options.DNSQueue, and refuses the
	// queries the verdict loop answered with NF_REPEAT and MarkDeny.
	ChainDNSOutput = "dns_output"
	// ChainDNSQuery is where ChainDNSOutput goes for a packet to a resolver.
	ChainDNSQuery = "dns_query"
	// ChainDNSInput sends the answers from the pod's resolvers to Options.DNSQueue.
	ChainDNSInput = "dns_input"
)

// dnsSets are the sets the DNS rules look servers up in.
func dnsSets(t *nftables.Table, servers []netip.AddrPort) []setSpec {
	var dests []Dest
	var ports []uint16
	for _, s := range servers {
		dests = append(dests, Dest{Proto: policy.UDP, Addr: s}, Dest{Proto: policy.TCP, Addr: s})
		ports = append(ports, s.Port())
	}
	v4, v6 := destElements(dests)
	return []setSpec{
		{set: portSet(t, SetDNSPorts), elems: portElements(ports)},
		{set: &nftables.Set{Table: t, Name: SetDNSServers4, KeyType: keyAddrPort4, Concatenation: true}, elems: v4},
		{set: &nftables.Set{Table: t, Name: SetDNSServers6, KeyType: keyAddrPort6, Concatenation: true}, elems: v6},
	}
}

// dnsJump is the first rule of a judging chain when DNS is observed: the one match every packet
// pays, a transport port looked up in the small port set (a bitmap), sends the few that may be DNS
// on to chain. It comes before the established accept, since queries and answers after a flow's
// first packet are established.
func (b builder) dnsJump(r *rules, port uint32, chain string) {
	if !b.o.observesDNS() {
		return
	}
	r.add([]expr.Any{
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBaseTransportHeader, Offset: port, Len: 2},
		lookup(SetDNSPorts, regScratch),
		jump(chain),
	})
}

// hasPayload matches a UDP datagram or TCP segment that carries data: loading the first byte past
// its transport header fails, and so ends the rule, for a segment without (a SYN, a bare ACK). The
// comparison after it always holds; it only shows the load in nft's listing ("@ih,0,8 & 0x0 == 0x0").
func hasPayload() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: regScratch, Base: expr.PayloadBase(unix.NFT_PAYLOAD_INNER_HEADER), Len: 1},
		&expr.Bitwise{SourceRegister: regScratch, DestRegister: regScratch, Len: 1, Mask: []byte{0}, Xor: []byte{0}},
		cmpEq(regScratch, []byte{0}),
	}
}

// dnsQueue queues to Options.DNSQueue, with the connection queues' bypass flag.
func (b builder) dnsQueue() []expr.Any {
	return []expr.Any{queueExpr(Options{Queue: b.o.Queue, QueueNum: b.o.DNSQueue, QueueCount: 1, FailOpen: b.o.FailOpen})}
}

// dnsOutput goes on to ChainDNSQuery for a packet to one of the resolvers.
func (b builder) dnsOutput() [][]expr.Any {
	var r rules
	for _, v6 := range []bool{false, true} {
		set := SetDNSServers4
		if v6 {
			set = SetDNSServers6
		}
		r.add(loadKey(keyEgress, v6), []expr.Any{lookup(set, regKey), &expr.Verdict{Kind: expr.VerdictGoto, Chain: ChainDNSQuery}})
	}
	return r
}

// dnsQuery queues a query that carries no podwall mark: neither the sidecar's own (MarkSelf) nor one
// back from the verdict loop; one that opens its flow (ct state new) goes with MarkNewFlow, so that the
// verdict loop judges the flow as a connection then, and only then. A query the loop refused (NF_REPEAT with MarkDeny) re-enters the output
// chain and is refused here, at once, so that the resolver library fails instead of waiting; one it
// released (NF_ACCEPT) leaves the hook and is not seen again. Segments without data (a TCP
// connection's SYN and ACKs) go back to the output chain, which judges the connection itself.
func (b builder) dnsQuery() [][]expr.Any {
	var r rules
	r.add(markIs(0), hasPayload(), ctStateIn(expr.CtStateBitNEW), setMark(MarkNewFlow), b.dnsQueue())
	r.add(markIs(0), hasPayload(), b.dnsQueue())
	r.add(markIs(MarkDeny), hasPayload(), reject(true))
	r.add(markIs(MarkDeny), hasPayload(), reject(false))
	return r
}

// dnsInput queues an answer from one of the resolvers: not one arriving on loopback, where an app
// holding CAP_NET_RAW can forge any source, and not one on the sidecar's own connections (MarkSelf),
// whose queries were never queued. The verdict loop answers with NF_ACCEPT or NF_DROP.
func (b builder) dnsInput() [][]expr.Any {
	var r rules
	r.add(metaIs(expr.MetaKeyIIF, native32(loIndex)), []expr.Any{verdict(expr.VerdictReturn)})
	r.add(ctMarkIs(MarkSelf), []expr.Any{verdict(expr.VerdictReturn)})
	for _, v6 := range []bool{false, true} {
		set := SetDNSServers4
		if v6 {
			set = SetDNSServers6
		}
		r.add(loadKey(keyReply, v6), []expr.Any{lookup(set, regKey)}, markIs(0), hasPayload(), b.dnsQueue())
	}
	return r
}
