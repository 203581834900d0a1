package ruleset

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// CounterDenyMemoHits is the named counter of the packets the deny memo refused.
const CounterDenyMemoHits = "deny_memo_hits"

// memoDenied adds the key of a packet the verdict loop denied to the deny memo set of its direction.
// It goes before the MarkDeny rules, which refuse the packet. Adding to a full set fails and ends the
// rule, and the refusal is a rule of its own: a full memo only means that the key is queued again.
// On input, loopback packets are left out: they are judged by port alone (ChainLoopback), and their
// address would name the pod itself in the ingress memo.
func (b builder) memoDenied(r *rules, k keyKind) {
	if !b.memo {
		return
	}
	for _, v6 := range []bool{false, true} {
		var notLo []expr.Any
		if k == keyIngress {
			notLo = []expr.Any{&expr.Meta{Key: expr.MetaKeyIIF, Register: regScratch},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: regScratch, Data: native32(loIndex)}}
		}
		// ICMP keys are left out as from the seen sets: an ICMP header has no ports, so the key would
		// hold its checksum.
		r.add(markIs(MarkDeny), notLo, notICMP(), loadKey(k, v6),
			[]expr.Any{&expr.Dynset{SrcRegKey: regKey, SetName: memoSet(k, v6), Operation: dynsetOpAdd}})
	}
}

// memoRefuse refuses, before the queue rules, a packet whose key the verdict loop denied less than
// Options.DenyMemoTimeout ago, as the MarkDeny rules would, and counts it: its deny was logged once.
// A key that is not in the memo (a new one) goes on to the queue as before.
func (b builder) memoRefuse(r *rules, k keyKind) {
	if !b.memo {
		return
	}
	count := &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: CounterDenyMemoHits}
	for _, v6 := range []bool{false, true} {
		hit := append(loadKey(k, v6), lookup(memoSet(k, v6), regKey), count)
		r.add(l4protoIs(protoTCP), hit, []expr.Any{tcpReset})
		r.add(hit, reject(false))
	}
}

func memoSet(k keyKind, v6 bool) string {
	switch {
	case k == keyIngress && v6:
		return SetDenyMemoIngress6
	case k == keyIngress:
		return SetDenyMemoIngress4
	case v6:
		return SetDenyMemoEgress6
	}
	return SetDenyMemoEgress4
}

// ReadCounter returns the packets a named counter of the table (CounterDenyMemoHits,
// CounterDNSUnsolicited, CounterDNSUntracked) has counted since the table was created: the counters
// survive Apply, so they only grow until Remove.
func ReadCounter(c *nftables.Conn, name string) (uint64, error) {
	o, err := c.GetObject(&nftables.CounterObj{Table: table(), Name: name})
	if err != nil {
		return 0, fmt.Errorf("read counter %s: %w", name, err)
	}
	co, ok := o.(*nftables.CounterObj)
	if !ok {
		return 0, fmt.Errorf("read counter %s: got a %T", name, o)
	}
	return co.Packets, nil
}
