package agent

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/dnsobs"
	"podwall.io/podwall/sidecar/nflog"
	"podwall.io/podwall/sidecar/nfq"
	"podwall.io/podwall/sidecar/packet"
	"podwall.io/podwall/sidecar/ruleset"
)

const (
	// dnsCopyLen has the kernel copy whole packets to the DNS queue: an answer is read to its end.
	dnsCopyLen = 0xffff
	// trackedQueries bounds the TCP queries awaiting an answer (the kernel tracks UDP ones), each for
	// ruleset.DNSQueryTimeout.
	trackedQueries = 4096
	// maxSeenKeys bounds the egress keys kept to forget when their address's names expire (forgetSeen):
	// past it a key stays in the kernel's seen set until the set's own timeout (log-allow-interval).
	maxSeenKeys = 65536
	// sweepInterval is how often expired names are forgotten.
	sweepInterval = time.Second
	// fqdnWriteBacklog bounds the answers whose addresses wait to be put in the kernel's FQDN sets.
	fqdnWriteBacklog = 1024
	// capNoteInterval spaces the log lines saying a cap refused an answer's addresses.
	capNoteInterval = time.Minute
)

// The results of an answer (podwall_dns_answers_total's result label).
const (
	answerLearned     = "learned"     // solicited and read: its addresses are held (it may hold none)
	answerUnsolicited = "unsolicited" // no query awaited it: dropped
	answerMalformed   = "malformed"   // not a DNS answer the sidecar can read: released, nothing learned
	answerTruncated   = "truncated"   // a message cut across TCP segments: released, nothing learned
	answerRefusedCap  = "refused_cap" // dns-max-names or dns-max-addrs refused some of its addresses
)

// The query outcomes beside the verdicts (podwall_dns_queries_total's verdict label).
const (
	queryMalformed = "malformed" // no DNS query the sidecar can read: judged as a query for no name
	queryUntracked = "untracked" // too many queries await an answer: refused, its answer could not be told from a forged one
)

// dnsObserver is the DNS queue's handler: it judges the pod's queries to its resolvers and learns the
// addresses their answers give, before the answers reach the app, so that the app's first connection
// to a name an FQDN rule allows is already allowed.
type dnsObserver struct {
	// dp is the connection datapath, whose name cache (dp.names) the answers fill.
	dp *datapath
	// learn hands an answer's learned addresses on to be put in the kernel's FQDN sets
	// (Agent.queueFQDN); it never waits.
	learn func([]ruleset.FQDNAddr)
	log   logr.Logger

	// mu guards tracker and answer: the DNS queue has one worker, but a worker the watchdog replaced
	// may still be running.
	mu      sync.Mutex
	tracker *dnsobs.Tracker
	answer  dnsobs.Answer
	learned []ruleset.FQDNAddr // learnAll's, reused

	queries  map[string]prometheus.Counter
	answers  map[string]prometheus.Counter
	capNoted atomic.Int64 // UnixNano of the last cap log line
}

// newDNSObserver creates the observer and its series on reg.
func newDNSObserver(dp *datapath, learn func([]ruleset.FQDNAddr), reg prometheus.Registerer, log logr.Logger) *dnsObserver {
	cache := dp.names
	o := &dnsObserver{dp: dp, learn: learn, log: log, tracker: dnsobs.NewTracker(trackedQueries, ruleset.DNSQueryTimeout),
		queries: map[string]prometheus.Counter{}, answers: map[string]prometheus.Counter{}}
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_dns_queries_total", Help: "DNS queries the pod sent to its resolvers that the verdict loop judged, by verdict (allow, deny, audit), or malformed, or untracked (TCP, refused: too many awaiting an answer).",
	}, []string{"verdict"})
	for _, v := range []string{policy.Allow.String(), policy.Deny.String(), policy.Audit.String(), queryMalformed, queryUntracked} {
		o.queries[v] = queries.WithLabelValues(v)
	}
	answers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podwall_dns_answers_total", Help: "DNS answers from the pod's resolvers, by result: learned, unsolicited (TCP, dropped), malformed or truncated (released, nothing learned), refused_cap (a cap refused some addresses).",
	}, []string{"result"})
	for _, r := range []string{answerLearned, answerUnsolicited, answerMalformed, answerTruncated, answerRefusedCap} {
		o.answers[r] = answers.WithLabelValues(r)
	}
	reg.MustRegister(queries, answers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podwall_dns_names", Help: "DNS names held for the addresses they resolved to (dns-max-names caps them).",
		}, func() float64 { n, _ := cache.Len(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podwall_dns_addresses", Help: "Addresses held with the DNS names they were resolved from (dns-max-addrs caps them).",
		}, func() float64 { _, n := cache.Len(); return float64(n) }),
	)
	return o
}

// handle is the DNS queue's nfq.Handler. The ruleset queues, from the output hook, segments with data
// to one of the pod's resolvers (queries) and, from the input hook, segments with data from one of them
// (answers).
func (o *dnsObserver) handle(p nfq.Packet) nfq.Reply {
	pkt, data, whole, err := packet.ParseData(p.Payload)
	if err != nil || (pkt.Proto != packet.ProtoUDP && pkt.Proto != packet.ProtoTCP) {
		o.dp.badPkts.Inc()
		return nfq.Reply{Action: nfqueue.NfDrop}
	}
	now := time.Now()
	if p.OutDev != 0 {
		return o.query(pkt, data, whole, p.Mark&ruleset.MarkMask == ruleset.MarkNewFlow, now)
	}
	return o.answerOf(pkt, data, whole, now)
}

// query judges a query packet. The packet opens or continues the pod's flow to its resolver, which the
// connection queues do not see (the DNS rules come first): a packet that opens it (newFlow: the ruleset
// marked it MarkNewFlow) has the flow judged as a connection first (logged unless allowed: each query's
// own line says the rest), as the connection path judges a connection's opening packet; then each
// query in it is judged by its name (DecideQuery). A flow the policy stops allowing is cut by
// revocation, as any connection. One refused query refuses the packet, at once (NF_REPEAT with MarkDeny: the kernel
// answers with a reject), so that the app's resolver fails rather than waiting. A query that cannot be
// read is judged as a query for no name: allowed unless the policy restricts DNS. An allowed TCP query
// is tracked here, for its answer; a UDP one is tracked by the kernel as it is released.
func (o *dnsObserver) query(pkt packet.Packet, data []byte, whole, newFlow bool, now time.Time) nfq.Reply {
	c := decide.Conn{Direction: policy.Egress, Proto: pkt.Proto, Local: pkt.Src, Remote: pkt.Dst}
	dec := o.dp.decider.Load()
	if newFlow {
		if v := o.dp.decideConn(dec, &c, now, false); v.Verdict != policy.Allow {
			o.dp.log(c, v)
			if v.Verdict == policy.Deny {
				return refuse
			}
		}
	}
	flow := dnsobs.Flow{Server: pkt.Dst, Client: pkt.Src, Proto: pkt.Proto}
	refused := false
	judge := func(msg []byte) {
		q, err := dnsobs.ParseQuery(msg)
		if err != nil {
			q = dnsobs.Query{}
		}
		v := dec.DecideQuery(c, q.Name)
		o.dp.log(c, v)
		switch {
		case err != nil:
			o.queries[queryMalformed].Inc()
		case v.Verdict != policy.Deny && pkt.Proto == packet.ProtoTCP && !o.asked(flow, q, now):
			o.queries[queryUntracked].Inc()
			refused = true
			return
		default:
			o.queries[v.Verdict.String()].Inc()
		}
		refused = refused || v.Verdict == policy.Deny
	}
	o.messages(pkt.Proto, data, whole, judge, func() { judge(nil) })
	if refused {
		return refuse
	}
	return release
}

// refuse answers a refused query: back into the output hook with MarkDeny, which the DNS rules reject.
// release answers an allowed one: back with MarkAllow, with which the DNS rules remember the flow's
// key as seen, add a UDP query to the queries awaiting an answer (the kernel tracks them: see
// ruleset's dnsQuery) and accept it.
var (
	refuse  = nfq.Reply{Action: nfqueue.NfRepeat, Mark: ruleset.MarkDeny}
	release = nfq.Reply{Action: nfqueue.NfRepeat, Mark: ruleset.MarkAllow}
)

func (o *dnsObserver) asked(f dnsobs.Flow, q dnsobs.Query, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tracker.Asked(f, q, now)
}

// logged reads an answer the kernel logged (and released): one that answers a query the pod sent,
// which the kernel checked.
func (o *dnsObserver) logged(p nflog.Packet) {
	pkt, data, whole, err := packet.ParseData(p.Payload)
	if err != nil || pkt.Proto != packet.ProtoUDP {
		o.dp.badPkts.Inc()
		return
	}
	o.answerOf(pkt, data, whole, time.Now())
}

// answerOf reads an answer packet. A TCP answer no query awaits drops the packet (a UDP one never
// gets here: the kernel drops it, see ruleset.CounterDNSUnsolicited); one the sidecar cannot
// read is released, as the resolver sent it, and teaches nothing; the others put their addresses in the
// name cache and the kernel's FQDN sets before they are released.
func (o *dnsObserver) answerOf(pkt packet.Packet, data []byte, whole bool, now time.Time) nfq.Reply {
	flow := dnsobs.Flow{Server: pkt.Src, Client: pkt.Dst, Proto: pkt.Proto}
	drop := false
	o.mu.Lock()
	defer o.mu.Unlock()
	o.messages(pkt.Proto, data, whole, func(msg []byte) {
		a := &o.answer
		if err := dnsobs.ParseAnswer(msg, a); err != nil {
			o.answers[answerMalformed].Inc()
			return
		}
		if pkt.Proto == packet.ProtoTCP && !o.tracker.Answered(flow, a.Query, now) {
			o.answers[answerUnsolicited].Inc()
			drop = true
			return
		}
		o.learnAll(a.Records, now)
	}, func() { o.answers[answerTruncated].Inc() })
	if drop {
		return nfq.Reply{Action: nfqueue.NfDrop}
	}
	return nfq.Reply{Action: nfqueue.NfAccept}
}

// learnAll holds each record's address for its names, and puts them in the kernel's FQDN sets, in one
// batch. o.mu is held.
func (o *dnsObserver) learnAll(records []dnsobs.Record, now time.Time) {
	result := answerLearned
	o.learned = o.learned[:0]
	for _, r := range records {
		expires, ok := o.dp.names.Add(r, now)
		if !ok {
			result = answerRefusedCap
			continue
		}
		o.learned = append(o.learned, ruleset.FQDNAddr{Addr: r.Addr, Names: r.Names, Expires: expires})
	}
	if len(o.learned) > 0 {
		o.learn(o.learned)
	}
	o.answers[result].Inc()
	if result == answerRefusedCap {
		o.noteCap(now)
	}
}

// noteCap says, once per capNoteInterval at most, that a cap refused addresses.
func (o *dnsObserver) noteCap(now time.Time) {
	last := o.capNoted.Load()
	if now.UnixNano()-last < int64(capNoteInterval) || !o.capNoted.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	names, addrs := o.dp.names.Len()
	o.log.Info("DNS cache full: answers teach no more addresses, so rules by name do not allow them; raise dns-max-names or dns-max-addrs",
		"names", names, "addresses", addrs)
}

// messages calls fn with each DNS message of a packet's data: a UDP datagram is one; a TCP segment
// holds whole messages each behind its length (dnsobs.SplitTCP), or a part of one. cut runs, once,
// when the data holds a message only in part (a TCP message cut across segments, or a capture shorter
// than the packet, which the copy length rules out).
func (o *dnsObserver) messages(proto uint8, data []byte, whole bool, fn func([]byte), cut func()) {
	switch {
	case !whole:
		cut()
	case proto == packet.ProtoUDP:
		fn(data)
	case !dnsobs.SplitTCP(data, fn):
		cut()
	}
}

// seenKeys are the egress keys the datapath allowed to addresses the pod resolved: when an address's
// names expire, they are deleted from the kernel's seen sets (ruleset.ForgetSeen), so that the next
// connection to it is judged again rather than let through as seen.
type seenKeys struct {
	mu   sync.Mutex
	keys map[netip.Addr][]ruleset.SeenKey
	n    int
}

// add records k, unless maxSeenKeys are held.
func (s *seenKeys) add(k ruleset.SeenKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, have := range s.keys[k.Addr] {
		if have == k {
			return
		}
	}
	if s.n >= maxSeenKeys {
		return
	}
	if s.keys == nil {
		s.keys = map[netip.Addr][]ruleset.SeenKey{}
	}
	s.keys[k.Addr] = append(s.keys[k.Addr], k)
	s.n++
}

// take removes and returns the keys of addrs.
func (s *seenKeys) take(addrs []netip.Addr) []ruleset.SeenKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ruleset.SeenKey
	for _, a := range addrs {
		out = append(out, s.keys[a]...)
		s.n -= len(s.keys[a])
		delete(s.keys, a)
	}
	return out
}

// observeDNS reads the pod's resolv.conf and, if it names resolvers, prepares the DNS queue's handler.
// Without them DNS is not observed, and Run says so.
func (a *Agent) observeDNS() {
	path := a.opts.DNS.ResolvConf
	rc, err := readResolvConf(path)
	switch {
	case err != nil:
		a.log.Info("DNS answers are not observed: the pod's resolv.conf cannot be read, so rules by name allow nothing", "resolv-conf", path, "error", err.Error())
		return
	case len(rc.Servers) == 0:
		a.log.Info("DNS answers are not observed: the pod's resolv.conf names no nameserver, so rules by name allow nothing", "resolv-conf", path)
		return
	}
	a.resolv = rc
	a.fqdnWrites = make(chan []ruleset.FQDNAddr, fqdnWriteBacklog)
	a.dns = newDNSObserver(&a.dp, a.queueFQDN, a.reg, a.log.WithName("dns"))
	a.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podwall_dns_udp_unsolicited_total", Help: "UDP DNS answers dropped in the kernel: no query awaited them (from that resolver and port, to that client port, with that ID).",
		}, a.kernelCounter(ruleset.CounterDNSUnsolicited)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podwall_dns_udp_untracked_total", Help: "UDP DNS queries refused in the kernel: too many queries awaited an answer, so their answers could not be told from forged ones.",
		}, a.kernelCounter(ruleset.CounterDNSUntracked)),
	)
	a.log.Info("observing DNS answers", "resolvers", rc.Servers, "search", rc.Search)
}

// readAnswers binds the netlink log group the ruleset copies UDP DNS answers to, when DNS is observed
// and the kernel can log (otherwise the answers go to the DNS queue, and it returns nil): the datapath
// then syncs with it before it judges an egress connection. It must run before the ruleset exists, so
// that no answer is logged to a group nobody reads.
func (a *Agent) readAnswers() (*nflog.Log, error) {
	if a.dns == nil || !a.kernelLogs {
		return nil, nil
	}
	l, err := a.openLog("DNS answers", nflog.Options{Group: a.dnsQueue(), CopyLen: dnsCopyLen}, a.dns.logged,
		"podwall_dns_log_overruns_total", "Times the socket the sidecar reads DNS answers from overflowed: answers the app got whose addresses were not learned.")
	if err != nil {
		return nil, err
	}
	a.dp.syncNames = l.Sync
	return l, nil
}

// dnsQueue is the DNS queue's number: the one after the connection queues.
func (a *Agent) dnsQueue() uint16 { return a.opts.QueueNum + a.opts.QueueCount }

// queueFQDN hands an answer's addresses to writeFQDN without waiting: the DNS handlers must not wait
// for the agent's lock, which an Apply holds for as long as it takes, since the datapath syncs with
// them before it judges an egress connection. Past fqdnWriteBacklog answers waiting, the addresses
// are not written: their connections are queued, and allowed from the name cache.
func (a *Agent) queueFQDN(addrs []ruleset.FQDNAddr) {
	select {
	case a.fqdnWrites <- slices.Clone(addrs):
	default:
	}
}

// writeFQDN writes the queued answers' addresses until ctx ends.
func (a *Agent) writeFQDN(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case addrs := <-a.fqdnWrites:
			a.addFQDN(addrs)
		}
	}
}

// addFQDN puts the addresses an answer gave in the kernel's FQDN sets, in one batch, for the rules of
// the policy in force whose patterns match their names. A failure costs only speed: the connection is
// then queued, and the verdict loop allows it from the name cache.
//
// Only a ruleset that consults the FQDN sets (log-allows none: ruleset.Options.DecidesInKernel) gets
// them: under the others a connection to the address is queued and allowed from the name cache, and
// every Apply (the Offline one a fail-closed sidecar leaves too) fills the sets from the cache.
//
// A batch costs tens of µs, and apps ask for the same names over and over: an address
// whose answer would move the expiry last put in the kernel for the same address and names by less
// than half of what is left of it is not put again (an answer with only such addresses sends no
// batch). The kernel's element may then time out before the name cache's; the next connection is
// queued, and allowed from the cache.
func (a *Agent) addFQDN(addrs []ruleset.FQDNAddr) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped || a.policy == nil || !(ruleset.Options{LogAllows: logAllows(a.tunables)}).DecidesInKernel() {
		return
	}
	var todo []ruleset.FQDNAddr
	var keys []fqdnKey
	for _, f := range addrs {
		key := fqdnKey{f.Addr, strings.Join(f.Names, " ")}
		if last, ok := a.pushed[key]; ok && last.Sub(now) >= f.Expires.Sub(now)/2 {
			continue
		}
		todo, keys = append(todo, f), append(keys, key)
	}
	if len(todo) == 0 {
		return
	}
	if err := a.guard.Write(func() error { return ruleset.AddFQDN(a.fqdnNft, a.policy.rules, todo, now) }); err != nil {
		a.log.Error(err, "resolved addresses not put in the kernel's FQDN sets; their connections are decided in user space", "addresses", len(todo))
		return
	}
	if a.pushed == nil {
		a.pushed = map[fqdnKey]time.Time{}
	}
	for i, k := range keys {
		a.pushed[k] = todo[i].Expires
	}
}

// fqdnKey is an address with the names an answer gave it, space-separated.
type fqdnKey struct {
	addr  netip.Addr
	names string
}

// sweep forgets, every sweepInterval, the names whose answers expired (and their expiries in pushed),
// and deletes from the kernel's seen sets the keys allowed to the addresses left with no name, so that
// the next connection to one is judged again (and refused if no other rule allows it). The FQDN sets'
// elements time out on their own.
func (a *Agent) sweep(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			keys := a.dp.seen.take(a.dp.names.Expire(now))
			a.mu.Lock()
			maps.DeleteFunc(a.pushed, func(_ fqdnKey, expires time.Time) bool { return !expires.After(now) })
			if len(keys) > 0 && !a.stopped {
				if err := a.guard.Write(func() error { return ruleset.ForgetSeen(a.nft, keys) }); err != nil {
					a.log.Error(err, "expired addresses stay let through until the seen sets' timeout (log-allow-interval)")
				}
			}
			a.mu.Unlock()
		}
	}
}
