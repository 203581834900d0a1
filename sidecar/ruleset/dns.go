package ruleset

import (
	"net/netip"
	"time"

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
	// ChainDNSTrack releases an allowed query, a UDP one once it awaits its answer in the kernel.
	ChainDNSTrack = "dns_track"
	// ChainDNSInput sends the answers from the pod's resolvers to Options.DNSQueue.
	ChainDNSInput = "dns_input"
)

// dnsSets are the sets the DNS rules look servers up in, and the sets of UDP queries awaiting an
// answer (dnsAskedSet).
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
		{set: dnsAskedSet(t, false)},
		{set: dnsAskedSet(t, true)},
	}
}

// The sets of UDP queries awaiting an answer, as "server . server port . client port . DNS ID". The
// kernel adds a query on its way out and deletes it when its answer comes in; an answer that matches
// none is dropped and counted (CounterDNSUnsolicited), so that only the answer to a query the pod
// sent, from the server and port it asked, on the client port it asked from, with the ID it chose,
// teaches the sidecar addresses. They outlive Apply (keptSets): a policy change must not turn the
// answers in flight into unsolicited ones.
const (
	SetDNSAsked4 = "dns_asked4"
	SetDNSAsked6 = "dns_asked6"
)

// The DNS rules' named counters, which outlive Apply as CounterDenyMemoHits does.
const (
	// CounterDNSUnsolicited counts the UDP answers dropped because no query awaited them.
	CounterDNSUnsolicited = "dns_unsolicited"
	// CounterDNSUntracked counts the UDP queries refused because the sets of queries awaiting an
	// answer were full: their answers could not be told from forged ones.
	CounterDNSUntracked = "dns_untracked"
)

// keptSets are the sets an Apply leaves as they are, elements included, when the new ruleset has
// them too.
var keptSets = []string{SetDNSAsked4, SetDNSAsked6}

// DNSQueryTimeout is how long a query waits for its answer, in the kernel's sets (UDP) and in the
// verdict loop's tracker (TCP): past it the answer is dropped as unsolicited. Resolver libraries give
// up well before (glibc and Go after 5s) and ask again, which is a new query.
const DNSQueryTimeout = 15 * time.Second

const (
	// dnsAskedSize bounds each set of queries awaiting an answer.
	dnsAskedSize = 65536
	// dnsIDOffset is where a UDP datagram's DNS message ID lies, from the start of the UDP header.
	dnsIDOffset = 8
)

var (
	keyDNSAsked4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeInetService, nftables.TypeInetService)
	keyDNSAsked6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService, nftables.TypeInetService, nftables.TypeInetService)
)

func dnsAskedSet(t *nftables.Table, v6 bool) *nftables.Set {
	if v6 {
		return dynamicSet(t, SetDNSAsked6, keyDNSAsked6, DNSQueryTimeout, dnsAskedSize)
	}
	return dynamicSet(t, SetDNSAsked4, keyDNSAsked4, DNSQueryTimeout, dnsAskedSize)
}

// loadAsked loads a UDP datagram's "server . server port . client port . DNS ID": from a query
// (the server is its destination) or from an answer (its source). It starts with a family check.
func loadAsked(v6, answer bool) []expr.Any {
	addrLen, reg := uint32(4), uint32(unix.NFT_REG32_01)
	saddr, daddr := uint32(12), uint32(16)
	if v6 {
		addrLen, reg = 16, unix.NFT_REG32_04
		saddr, daddr = 8, 24
	}
	server, serverPort, clientPort := daddr, uint32(2), uint32(0)
	if answer {
		server, serverPort, clientPort = saddr, 0, 2
	}
	port := func(r, off uint32) *expr.Payload {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
	}
	return append(nfprotoIs(v6),
		&expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: server, Len: addrLen},
		port(reg, serverPort), port(reg+1, clientPort), port(reg+2, dnsIDOffset))
}

func askedSet(v6 bool) string {
	if v6 {
		return SetDNSAsked6
	}
	return SetDNSAsked4
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

// logExpr copies the packet, whole, to the netlink log group, at once (a queue threshold of one).
func logExpr(group uint16) *expr.Log {
	return &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_SNAPLEN | 1<<unix.NFTA_LOG_QTHRESHOLD,
		Group: group, Snaplen: 0xffff, QThreshold: 1}
}

// logBatched copies the packet to the netlink log group, which hands copies on in the batches its
// reader asked for (nflog.Options.Batch).
func logBatched(group uint16) *expr.Log {
	return &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_SNAPLEN, Group: group, Snaplen: 0xffff}
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

// dnsQuery judges a query, in the kernel or by the verdict loop.
//
// A query the loop allowed comes back (NF_REPEAT) with MarkAllow: its flow's key goes in the seen
// set (as the output chain's remember does), and ChainDNSTrack releases it. One the loop refused
// comes back with MarkDeny and is refused, at once, so that the resolver library fails instead of
// waiting.
//
// Unless the policy restricts DNS (every query is then judged by its name), a UDP query the kernel
// may allow alone goes to ChainDNSTrack without leaving the kernel: one on a flow conntrack has seen
// answered, or one whose key is known (seen, or in the allow sets where the kernel decides alone: see
// known). The rest is queued: a query that opens its flow (ct state new) with MarkNewFlow, so that the
// verdict loop judges the flow as a connection then, and only then.
//
// Segments without data (a TCP connection's SYN and ACKs) go back to the output chain, which judges
// the connection itself.
func (b builder) dnsQuery() [][]expr.Any {
	var r rules
	track := []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: ChainDNSTrack}}
	b.rememberSeen(&r, keyEgress, SetSeenEgress4, SetSeenEgress6)
	r.add(markIs(MarkAllow), track)
	r.add(markIs(MarkDeny), hasPayload(), reject(true))
	r.add(markIs(MarkDeny), hasPayload(), reject(false))
	if !b.restrictDNS {
		alone := append(markIs(0), append(hasPayload(), l4protoIs(unix.IPPROTO_UDP)...)...)
		r.add(alone, ctStateIn(expr.CtStateBitESTABLISHED), track)
		var known rules
		b.known(&known, keyEgress, SetSeenEgress4, SetSeenEgress6, SetAllowEgress4, SetAllowEgress6)
		for _, k := range known {
			r.add(alone, k[:len(k)-1], track) // known's rules end in an accept
		}
	}
	r.add(markIs(0), hasPayload(), ctStateIn(expr.CtStateBitNEW), setMark(MarkNewFlow), b.dnsQueue())
	r.add(markIs(0), hasPayload(), b.dnsQueue())
	return r
}

// dnsTrack releases an allowed query: a UDP one is added to the queries awaiting an answer of its
// family first. Adding to a full set fails and ends the rule, and the rule after refuses the query
// and counts it (CounterDNSUntracked): its answer would be dropped as unsolicited, and a resolver
// that is refused fails at once instead of waiting. A TCP query is not tracked here but by the
// verdict loop, which reads a TCP answer's question (the kernel cannot find its ID behind the
// length prefix).
func (b builder) dnsTrack() [][]expr.Any {
	var r rules
	udp := l4protoIs(unix.IPPROTO_UDP)
	for _, v6 := range []bool{false, true} {
		add := &expr.Dynset{SrcRegKey: regKey, SetName: askedSet(v6), Operation: dynsetOpAdd}
		r.add(udp, loadAsked(v6, false), []expr.Any{add}, acceptV)
	}
	r.add(udp, []expr.Any{&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: CounterDNSUntracked}}, reject(false))
	r.add(acceptV)
	return r
}

// dnsInput sends the answers from the pod's resolvers on: not one arriving on loopback, where an app
// holding CAP_NET_RAW can forge any source, and not one on the sidecar's own connections (MarkSelf),
// whose queries were never queued. A UDP answer goes on only if it answers a query awaiting one (the
// query is then deleted: a second answer to it is dropped), to the log (Options.DNSLog: copied and
// accepted) or the queue; the others are dropped and counted (CounterDNSUnsolicited). A TCP answer
// goes to the queue, whose verdict loop tracks TCP queries. The verdict loop answers a queued answer
// with NF_ACCEPT or NF_DROP.
func (b builder) dnsInput() [][]expr.Any {
	var r rules
	r.add(metaIs(expr.MetaKeyIIF, native32(loIndex)), []expr.Any{verdict(expr.VerdictReturn)})
	r.add(ctMarkIs(MarkSelf), []expr.Any{verdict(expr.VerdictReturn)})
	udp := l4protoIs(unix.IPPROTO_UDP)
	for _, v6 := range []bool{false, true} {
		set := SetDNSServers4
		if v6 {
			set = SetDNSServers6
		}
		server := append(loadKey(keyReply, v6), lookup(set, regKey))
		asked := append(loadAsked(v6, true), lookup(askedSet(v6), regKey),
			&expr.Dynset{SrcRegKey: regKey, SetName: askedSet(v6), Operation: dynsetOpDelete})
		if b.o.DNSLog {
			r.add(server, markIs(0), hasPayload(), udp, asked, []expr.Any{logExpr(b.o.DNSQueue)}, acceptV)
		} else {
			r.add(server, markIs(0), hasPayload(), udp, asked, b.dnsQueue())
		}
		r.add(server, markIs(0), hasPayload(), udp,
			[]expr.Any{&expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: CounterDNSUnsolicited}}, dropV)
		r.add(server, markIs(0), hasPayload(), b.dnsQueue())
	}
	return r
}
