// Package report aggregates the connections a sidecar observes in Learn and Monitor mode into one
// entry per direction, peer, protocol and port, bounded in memory, for delivery to policygen. Adding
// never blocks on delivery: when the bound is reached the oldest entry is evicted and counted.
package report

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"podwall.io/podwall/api/policy"
)

// Key identifies an aggregated entry.
type Key struct {
	Direction policy.Direction
	Peer      netip.Addr
	Protocol  policy.Protocol
	Port      uint16 // the pod's port for ingress, the remote port otherwise
}

func keyOf(e *policy.ReportEntry) Key {
	return Key{Direction: e.Direction, Peer: e.Peer, Protocol: e.Protocol, Port: e.Port}
}

// Aggregator is a bounded, concurrency-safe table of entries.
type Aggregator struct {
	mu      sync.Mutex
	max     int
	byKey   map[Key]*list.Element
	order   *list.List // oldest first
	dropped uint64
}

// New returns an aggregator holding at most limit entries (at least 1).
func New(limit int) *Aggregator {
	return &Aggregator{max: max(limit, 1), byKey: map[Key]*list.Element{}, order: list.New()}
}

// Outcome is what decided one observed connection: its verdict and the rule and evaluator behind it,
// and for egress the DNS name the pod resolved the peer from ("" for none).
type Outcome struct {
	Verdict         policy.Verdict
	Rule, Evaluator string
	Name            string
}

// Add counts one connection at time now; the entry keeps the latest outcome, and the latest name the
// peer was known by: a connection made after the name's answer expired does not forget it.
func (a *Aggregator) Add(k Key, o Outcome, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.byKey[k]; ok {
		e := el.Value.(*policy.ReportEntry)
		e.Count++
		e.LastSeen, e.Verdict, e.Rule, e.Evaluator = now, o.Verdict, o.Rule, o.Evaluator
		if o.Name != "" {
			e.Name = o.Name
		}
		return
	}
	if a.order.Len() >= a.max {
		oldest := a.order.Front()
		e := oldest.Value.(*policy.ReportEntry)
		a.dropped += e.Count
		delete(a.byKey, keyOf(e))
		a.order.Remove(oldest)
	}
	a.byKey[k] = a.order.PushBack(&policy.ReportEntry{Direction: k.Direction, Peer: k.Peer, Protocol: k.Protocol,
		Port: k.Port, Name: o.Name, Count: 1, FirstSeen: now, LastSeen: now, Verdict: o.Verdict, Rule: o.Rule, Evaluator: o.Evaluator})
}

// Drain removes and returns every entry, oldest first.
func (a *Aggregator) Drain() []policy.ReportEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]policy.ReportEntry, 0, a.order.Len())
	for el := a.order.Front(); el != nil; el = el.Next() {
		out = append(out, *el.Value.(*policy.ReportEntry))
	}
	a.order.Init()
	clear(a.byKey)
	return out
}

// Restore puts back entries whose delivery failed, merging them with what arrived since; the oldest
// are evicted first if the bound is exceeded.
func (a *Aggregator) Restore(entries []policy.ReportEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if el, ok := a.byKey[keyOf(&e)]; ok {
			cur := el.Value.(*policy.ReportEntry)
			cur.Count += e.Count
			cur.FirstSeen = e.FirstSeen
			if cur.Name == "" {
				cur.Name = e.Name
			}
			a.order.MoveToFront(el)
			continue
		}
		if a.order.Len() >= a.max {
			a.dropped += e.Count // the restored entry is older than anything held
			continue
		}
		a.byKey[keyOf(&e)] = a.order.PushFront(&e)
	}
}

// Len is the number of entries held.
func (a *Aggregator) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.order.Len()
}

// Dropped is how many connections were evicted unreported since the start.
func (a *Aggregator) Dropped() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}
