package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"

	"podwall.io/podwall/api/policy"
)

// TableName is the one table the sidecar owns, in the inet family (IPv4 and IPv6 alike).
const TableName = "podwall"

// Packet and connection marks. The podwall bits are MarkMask (0x00f00000), a nibble that the users of
// marks inside a pod's network namespace leave alone: Istio marks 0x539 (1337) for its proxy's traffic
// and TPROXY, kube-proxy's 0x4000 and 0x8000 and Calico's and Cilium's marks live in the host's
// namespace, and veth crossings clear the packet mark anyway. Rules compare only these bits. An app
// holding CAP_NET_RAW can put any mark on its packets (SO_MARK): the guard chains clear these bits
// before the judging chains see a packet, so that only the verdict loop sets them.
const (
	MarkMask uint32 = 0x00f00000
	// MarkSelf is the SO_MARK of the sidecar's own sockets: their packets to Options.SelfDests are
	// accepted, so that the sidecar reaches policygen and DNS even under a deny-all policy, and their
	// connections carry it in the connection mark (SelfConn).
	MarkSelf uint32 = 0x00100000
	// MarkAllow, set by an NF_REPEAT verdict, accepts the queued packet, records the key in the seen
	// set and sets MarkAllow in the connection mark (other bits of the connection mark are kept). Only
	// connections the verdict loop allowed carry it; those the kernel accepted alone (seen or allowed
	// keys) do not.
	MarkAllow uint32 = 0x00200000
	// MarkDeny, set by an NF_REPEAT verdict, refuses the queued packet: a TCP reset, or ICMP
	// administratively prohibited.
	MarkDeny uint32 = 0x00400000
	// MarkNewFlow is set by the DNS rules on a query that conntrack sees as its flow's first (ct state
	// new: for UDP, any query before the resolver's first answer) as it goes to Options.DNSQueue: the
	// verdict loop judges the flow as a connection only then, as the connection path judges only a
	// connection's opening packet. Every query after goes to the queue without it, and is judged by
	// its name alone.
	MarkNewFlow uint32 = 0x00800000
	// MarkPortMask: an inbound packet is queued with its connection's original destination port, in
	// host order, in these bits of the packet mark (the rest of its mark is cleared).
	MarkPortMask uint32 = 0x0000ffff
)

// SelfConn says whether a connection mark is that of a connection the ruleset accepted as the
// sidecar's own: policy revocation never cuts those.
func SelfConn(ctMark uint32) bool { return ctMark&MarkMask == MarkSelf }

// QueueKind says how the rules hand packets to the verdict loop.
type QueueKind int

// The ways to queue.
const (
	// QueueNative is nftables' own queue expression (kernel module nft_queue).
	QueueNative QueueKind = iota
	// QueueCompat is the xtables NFQUEUE target through nftables' compat layer, for kernels built
	// without nft_queue.
	QueueCompat
)

func (k QueueKind) String() string {
	switch k {
	case QueueNative:
		return "native"
	case QueueCompat:
		return "compat"
	}
	return fmt.Sprintf("QueueKind(%d)", int(k))
}

// LogAllows says which allowed connections reach the verdict loop, and so its log.
type LogAllows int

// The choices, the zero value first.
const (
	// LogAllowsFirst queues a key (peer, protocol, port) once per Options.SeenTimeout; repeat
	// connections with a key seen allowed are accepted in the kernel.
	LogAllowsFirst LogAllows = iota
	// LogAllowsAll queues every new connection.
	LogAllowsAll
	// LogAllowsNone accepts what the policy allows in the kernel; only the rest is queued.
	LogAllowsNone
)

// DefaultSeenTimeout is Options.SeenTimeout's default.
const DefaultSeenTimeout = time.Minute

// DefaultDenyMemoTimeout is Options.DenyMemoTimeout's default: long enough to absorb a SYN flood's
// retries, short enough that a peer which keeps trying is logged again every few seconds.
const DefaultDenyMemoTimeout = 2 * time.Second

// Options shape the ruleset. The zero value queues to queue 0 with the native expression, fails
// closed, and logs each allowed key once a minute.
type Options struct {
	// Queue is how packets are queued; DetectQueue tells what the kernel has.
	Queue QueueKind
	// QueueNum is the first queue, QueueCount how many (default 1). More than one fans connections
	// out over the queues by CPU.
	QueueNum, QueueCount uint16
	// FailOpen sets the queue's bypass flag: while no verdict loop is bound, new connections are
	// accepted instead of dropped.
	FailOpen bool
	// LogAllows says which allowed connections are queued (see LogAllows).
	LogAllows LogAllows
	// SeenTimeout is how long a seen key is accepted in the kernel (default DefaultSeenTimeout).
	SeenTimeout time.Duration
	// DenyMemoTimeout is how long, in Protect, a key the verdict loop denied is refused in the kernel
	// without being queued again (default DefaultDenyMemoTimeout): the deny was logged once, and a
	// flood of it must not crowd new keys out of the queue.
	DenyMemoTimeout time.Duration
	// SelfPorts are the sidecar's own TCP ports (metrics, readiness), open to ingress in every mode.
	SelfPorts []uint16
	// SelfDests are the destinations the sidecar's own sockets (MarkSelf) may reach whatever the
	// policy; MarkSelf on a packet to any other destination is cleared, so it is judged like any
	// other. AddSelfDest adds to them between Applies.
	SelfDests []Dest
	// Offline leaves out the queue rules: what the allow sets allow is accepted and the rest refused,
	// in every mode. It is what a fail-closed sidecar leaves behind when it exits.
	Offline bool
	// DNSQueue is the queue the pod's DNS queries and answers go to (see DNSServers); it must lie
	// outside QueueNum..QueueNum+QueueCount-1.
	DNSQueue uint16
	// DNSServers are the pod's resolvers (its resolv.conf nameservers, port 53). Queries to them and
	// answers from them are queued to DNSQueue, UDP and TCP alike. None: DNS is not observed, and the
	// ruleset has no DNS rules at all. Offline has none either.
	DNSServers []netip.AddrPort
	// DNSLog copies the UDP answers that answer an awaited query to the netlink log group numbered
	// DNSQueue and accepts them at once, rather than queueing them: the app gets its answer without
	// waiting for the sidecar, which reads the copy (sidecar/nflog) and catches up with the log before
	// it judges a connection by name. DetectLog tells whether the kernel can log. TCP answers are
	// queued either way.
	DNSLog bool
	// AllowLog, with LogAllowsFirst or LogAllowsAll, accepts in the kernel what the allow sets allow,
	// as LogAllowsNone does, and copies each such connection's opening packet (LogAllowsFirst: once
	// per seen key) to the netlink log group QueueNum, from which the verdict loop logs and records it
	// (sidecar/nflog): the connection does not wait for user space. ICMP, connections only an FQDN rule
	// allows, and what no allow set holds are queued as before. DetectLog tells whether the kernel
	// can log.
	AllowLog bool
	// FQDN is the name cache at Apply time: its addresses are put in the new FQDN sets for the
	// policy's rules whose patterns match their names, each with its remaining time, so that an
	// Apply loses no resolved address. Expired entries are left out.
	FQDN []FQDNAddr
}

func (o Options) withDefaults() (Options, error) {
	if o.QueueCount == 0 {
		o.QueueCount = 1
	}
	if o.SeenTimeout == 0 {
		o.SeenTimeout = DefaultSeenTimeout
	}
	if o.DenyMemoTimeout == 0 {
		o.DenyMemoTimeout = DefaultDenyMemoTimeout
	}
	switch {
	case o.Queue != QueueNative && o.Queue != QueueCompat:
		return o, fmt.Errorf("queue kind %d unknown", o.Queue)
	case int(o.QueueNum)+int(o.QueueCount) > 1<<16:
		return o, fmt.Errorf("queues %d+%d run past 65535", o.QueueNum, o.QueueCount)
	case o.LogAllows < LogAllowsFirst || o.LogAllows > LogAllowsNone:
		return o, fmt.Errorf("log allows %d unknown", o.LogAllows)
	case o.SeenTimeout < time.Millisecond:
		return o, fmt.Errorf("seen timeout %s: want at least 1ms", o.SeenTimeout)
	case o.DenyMemoTimeout < time.Millisecond:
		return o, fmt.Errorf("deny memo timeout %s: want at least 1ms", o.DenyMemoTimeout)
	case slices.Contains(o.SelfPorts, 0):
		return o, errors.New("port 0 in self ports")
	case o.observesDNS() && o.DNSQueue >= o.QueueNum && int(o.DNSQueue) < int(o.QueueNum)+int(o.QueueCount):
		return o, fmt.Errorf("DNS queue %d is one of the connection queues %d+%d", o.DNSQueue, o.QueueNum, o.QueueCount)
	}
	for _, s := range o.DNSServers {
		if !s.IsValid() || s.Port() == 0 {
			return o, fmt.Errorf("DNS server %q: want an address and a port", s)
		}
	}
	for _, a := range o.FQDN {
		if !a.Addr.IsValid() {
			return o, errors.New("FQDN address invalid")
		}
	}
	for _, d := range o.SelfDests {
		if err := d.validate(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// observesDNS says whether DNS packets are queued: only to a verdict loop, and only to known servers.
func (o Options) observesDNS() bool { return len(o.DNSServers) > 0 && !o.Offline }

// DecidesInKernel says whether the kernel accepts what the policy allows alone, looking up the allow
// sets and the FQDN sets: with LogAllowsNone and Offline only. Otherwise a connection to a resolved
// address is queued (once per seen key) and allowed from the name cache, and AddFQDN between Applies
// is work nothing reads: an Apply (Offline too) fills the FQDN sets from Options.FQDN.
func (o Options) DecidesInKernel() bool { return o.LogAllows == LogAllowsNone || o.Offline }

// logsAllows says whether the allow sets accept, logged, in the kernel (Options.AllowLog).
func (o Options) logsAllows() bool { return o.AllowLog && !o.DecidesInKernel() }

// usesSeen says whether the seen sets exist: with LogAllowsAll every connection is queued anyway.
func (o Options) usesSeen() bool { return o.LogAllows != LogAllowsAll }

// usesDenyMemo says whether the deny memo sets exist: only the verdict loop denies, and only in
// Protect (Learn and Monitor never deny; Offline has no verdict loop).
func (o Options) usesDenyMemo(m policy.Mode) bool { return m == policy.Protect && !o.Offline }

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Dial opens a connection to nftables in the network namespace netnsFD (0: the caller's), with a
// netlink send buffer that holds the largest batch Apply sends (a batch is sent in one message), and a
// receive buffer as large, for the kernel's answers to a batch of that many messages (a 100k-peer
// policy with DNS observed overran the default one: ENOBUFS, and the policy was not applied). opts
// add to these: nftables.AsLasting keeps one netlink socket for every batch, where otherwise each
// opens its own in the namespace, which costs a small batch (AddFQDN, while a DNS answer waits) most
// of its time.
func Dial(netnsFD int, opts ...nftables.ConnOption) (*nftables.Conn, error) {
	opts = append(opts, nftables.WithSockOptions(func(nc *netlink.Conn) error {
		if err := nc.SetReadBuffer(sndBuf); err != nil {
			return err
		}
		return nc.SetWriteBuffer(sndBuf)
	}))
	if netnsFD != 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("dial nftables: %w", err)
	}
	return c, nil
}

// Apply makes the podwall table enforce p (nil: the deny-all baseline, Protect without rules) with
// options o: Compile, then Compiled.Apply.
func Apply(c *nftables.Conn, p *policy.Policy, o Options) error {
	cp, err := Compile(p)
	if err != nil {
		return err
	}
	_, err = cp.Apply(c, o)
	return err
}

// stageBytes bounds the allow set elements, in netlink bytes, that one batch of Apply carries: a
// policy whose allow sets take more is staged (see Compiled.Apply). A batch is held in memory whole,
// twice while it is sent: 1 MiB is some 25,000 IPv4 keys.
const stageBytes = 1 << 20

// Apply makes the podwall table enforce p with options o, in one netlink batch: the kernel swaps the
// whole ruleset at once or, on any error, keeps the previous one. The base chains stay registered
// across the swap, so packets waiting in a queue for their verdict survive it (a chain leaving its
// hook would drop them); their rules and all sets are replaced, which also forgets the seen keys of
// the previous policy. Nothing outside the table is touched. c should come from Dial; Apply, Remove
// and DetectQueue must not run concurrently on one connection, whose batch they share.
//
// A policy whose allow sets take more than stageBytes is staged first, so that an Apply holds a
// bounded part of them in memory whatever their size: its allow sets are created under names of their
// own (the usual names followed by "_g" and a number that no set of the table has) and filled over as
// many batches as it takes while no rule refers to them, then the last batch swaps the ruleset as
// above, its rules looking the staged sets up. Until that batch commits the previous ruleset enforces
// exactly as before; if any batch fails, the staged sets are deleted (or, if that fails too, by the
// next Apply) and the previous ruleset stays in force.
//
// It returns how many batches the kernel committed: one, more for a staged policy.
func (p *Compiled) Apply(c *nftables.Conn, o Options) (int, error) {
	o, err := o.withDefaults()
	if err != nil {
		return 0, fmt.Errorf("ruleset options: %w", err)
	}
	t := table()
	sets, err := buildSets(t, p, o, time.Now())
	if err != nil {
		return 0, err
	}
	old, err := current(c)
	if err != nil {
		return 0, err
	}
	allow := p.allowSpecs(t, "")
	size := 0
	for _, s := range allow {
		size += s.count() * elementBytes(s.set)
	}
	if size <= stageBytes {
		return p.swap(c, old, t, o, "", append(allow, sets...))
	}
	suffix := old.freshSuffix()
	allow = p.allowSpecs(t, suffix)
	commits, err := stage(c, t, allow)
	if err == nil {
		var n int
		n, err = p.swap(c, old, t, o, suffix, sets)
		commits += n
	}
	if err != nil && commits > 0 { // else the kernel took none of them
		commits += unstage(c, t, old, allow)
	}
	return commits, err
}

// swap sends the batch that turns the table from old into the ruleset of p with sets (the allow sets
// among them unless they are staged under allowSuffix already).
func (p *Compiled) swap(c *nftables.Conn, old state, t *nftables.Table, o Options, allowSuffix string, sets []setSpec) (int, error) {
	counters := []string{CounterDenyMemoHits}
	if o.observesDNS() {
		counters = append(counters, CounterDNSUnsolicited, CounterDNSUntracked)
	}
	if err := old.replace(c, t, buildChains(t, o, p, allowSuffix), sets, counters); err != nil {
		return 0, err
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("apply ruleset: %w", err)
	}
	return 1, nil
}

// stage creates the allow sets and fills them, in batches of at most stageBytes of elements each, and
// returns how many batches were committed.
func stage(c *nftables.Conn, t *nftables.Table, allow []setSpec) (int, error) {
	commits, queued := 0, 0
	flush := func() error {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("stage allow sets: %w", err)
		}
		commits, queued = commits+1, 0
		return nil
	}
	c.AddTable(t)
	for _, s := range allow {
		// These fail only for anonymous sets or unencodable keys, which allowSpecs never makes.
		if err := c.AddSet(s.set, nil); err != nil {
			return commits, fmt.Errorf("set %s: %w", s.set.Name, err)
		}
		err := s.send(c, func(n int) error {
			if queued += n * elementBytes(s.set); queued >= stageBytes {
				return flush()
			}
			return nil
		})
		if err != nil {
			return commits, err
		}
	}
	return commits, flush()
}

// unstage deletes the staged allow sets after a failed Apply, as far as it can, and returns the
// batches committed (0 or 1). Each is added before it is deleted, a no-op for one that exists, so
// that the batch does not fail for a set whose batch failed; a table that did not exist before the
// Apply is deleted whole.
func unstage(c *nftables.Conn, t *nftables.Table, old state, allow []setSpec) int {
	c.AddTable(t)
	if !old.exists {
		c.DelTable(t)
	} else {
		for _, s := range allow {
			if c.AddSet(s.set, nil) == nil {
				c.DelSet(s.set)
			}
		}
	}
	if c.Flush() != nil {
		return 0
	}
	return 1
}

// replace queues the batch that turns the table from s into chains, sets and named counters.
func (s state) replace(c *nftables.Conn, t *nftables.Table, chains []chainSpec, sets []setSpec, counters []string) error {
	c.AddTable(t)
	s.clear(c, chains, sets)
	for _, ch := range chains {
		c.AddChain(ch.chain)
	}
	for _, set := range sets {
		// These fail only for anonymous sets or unencodable keys, which buildSets never makes.
		if err := c.AddSet(set.set, nil); err != nil {
			return fmt.Errorf("set %s: %w", set.set.Name, err)
		}
		if err := set.send(c, func(int) error { return nil }); err != nil {
			return err
		}
	}
	// The counters outlive each Apply: a counter object that exists already is left as it is.
	for _, name := range counters {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
	}
	for _, ch := range chains {
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch.chain, Exprs: r})
		}
	}
	return nil
}

// Remove deletes the podwall table, if there is one: what a fail-open sidecar does when it exits.
func Remove(c *nftables.Conn) error {
	t := table()
	c.AddTable(t) // so that the delete never fails for want of a table
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove ruleset: %w", err)
	}
	return nil
}

// DetectQueue tells which queue the kernel supports, native first. It probes with a rule in a chain
// of the podwall table that the same batch deletes again (and the table too, if the probe created
// it), so nothing changes, inside the table or out.
func DetectQueue(c *nftables.Conn) (QueueKind, error) {
	var errs []error
	for _, k := range []QueueKind{QueueNative, QueueCompat} {
		err := probe(c, queueExpr(Options{Queue: k, QueueCount: 1}))
		if err == nil {
			return k, nil
		}
		errs = append(errs, fmt.Errorf("%s queue: %w", k, err))
	}
	return 0, fmt.Errorf("kernel cannot queue: %w", errors.Join(errs...))
}

// DetectLog tells whether the kernel can copy packets to a netlink log group (nft_log with
// nfnetlink_log), probing as DetectQueue does.
func DetectLog(c *nftables.Conn) bool { return probe(c, logExpr(0)) == nil }

// probe adds and removes a rule made of e in one batch; the kernel refuses it if it lacks e.
func probe(c *nftables.Conn, e expr.Any) error {
	old, err := current(c)
	if err != nil {
		return err
	}
	t := table()
	ch := &nftables.Chain{Table: t, Name: "queue_probe"}
	c.AddTable(t)
	c.AddChain(ch)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{e}})
	c.DelChain(ch)
	if !old.exists {
		c.DelTable(t)
	}
	return c.Flush()
}

// state is what the podwall table holds now.
type state struct {
	exists bool
	chains []*nftables.Chain
	sets   []*nftables.Set
}

func current(c *nftables.Conn) (state, error) {
	var s state
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return s, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		s.exists = s.exists || t.Name == TableName
	}
	if !s.exists {
		return s, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return s, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			s.chains = append(s.chains, ch)
		}
	}
	if s.sets, err = c.GetSets(table()); err != nil {
		return s, fmt.Errorf("list sets: %w", err)
	}
	return s, nil
}

// clear queues what empties the table for want: every chain flushed (which drops the rules'
// references to sets and chains), every set deleted but the keptSets that wantSets has too (adding
// them again, as replace does, leaves them as they are), and every chain deleted that want has not,
// or has with another hook. Base chains that stay keep their hook registration.
func (s state) clear(c *nftables.Conn, want []chainSpec, wantSets []setSpec) {
	for _, ch := range s.chains {
		c.FlushChain(ch)
	}
	for _, set := range s.sets {
		kept := slices.Contains(keptSets, set.Name) &&
			slices.ContainsFunc(wantSets, func(w setSpec) bool { return w.set.Name == set.Name })
		if !kept {
			c.DelSet(set)
		}
	}
	for _, ch := range s.chains {
		i := slices.IndexFunc(want, func(w chainSpec) bool { return w.chain.Name == ch.Name })
		if i < 0 || !sameHook(ch, want[i].chain) {
			c.DelChain(ch)
		}
	}
}

// freshSuffix is a suffix for staged allow sets (see Compiled.Apply) that no set of s has: "_g" and
// the least number free. Staged Applies alternate between "_g1" and "_g2", unless one whose staged
// sets could not be deleted left them behind.
func (s state) freshSuffix() string {
	for n := 1; ; n++ {
		suffix := fmt.Sprintf("_g%d", n)
		taken := slices.ContainsFunc(s.sets, func(set *nftables.Set) bool {
			for _, f := range allowFamilies {
				if set.Name == f.name+suffix || set.Name == f.name+suffix+exactSuffix {
					return true
				}
			}
			return false
		})
		if !taken {
			return suffix
		}
	}
}

func sameHook(a, b *nftables.Chain) bool {
	if (a.Hooknum == nil) != (b.Hooknum == nil) {
		return false
	}
	return a.Hooknum == nil || *a.Hooknum == *b.Hooknum && *a.Priority == *b.Priority && a.Type == b.Type
}
