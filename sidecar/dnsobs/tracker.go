package dnsobs

import (
	"net/netip"
	"time"
)

// Flow names the connection a query went out on.
type Flow struct {
	Server netip.AddrPort
	Client netip.AddrPort
	Proto  uint8
}

// Tracker holds the queries the pod sent and not yet got an answer to, so that only an answer to one
// of them is learned from: one whose flow, ID and question (name and type, compared canonically, as
// DNS compares them) all match. An answer consumes its query, so a second answer to it (a spoofed
// one racing the real one, or a replay) is refused. Entries time out, and the table is bounded: when
// it is full, new queries are not tracked (their answers will be refused) rather than old ones
// forgotten. A Tracker is not safe for concurrent use: the DNS verdict loop owns it.
type Tracker struct {
	max     int
	timeout time.Duration
	pending map[pendingKey]time.Time // query → its deadline
	order   []deadline               // every deadline set, oldest first, from order[head]
	head    int
}

type pendingKey struct {
	flow Flow
	q    Query
}

type deadline struct {
	key pendingKey
	at  time.Time
}

// NewTracker returns a Tracker holding at most limit queries (at least 1), each for timeout. Its table
// grows with the queries waiting, rather than taking room for limit of them up front: most pods send
// their queries over UDP, which the kernel tracks.
func NewTracker(limit int, timeout time.Duration) *Tracker {
	limit = max(limit, 1)
	return &Tracker{max: limit, timeout: timeout, pending: map[pendingKey]time.Time{}}
}

// Asked records that the pod sent q on f. A query asked again (a retransmission) gets a new deadline.
// It returns false when the table is full (the oldest is not evicted).
func (t *Tracker) Asked(f Flow, q Query, now time.Time) bool {
	t.expire(now)
	k := pendingKey{f, q}
	at := now.Add(t.timeout)
	old, ok := t.pending[k]
	switch {
	case !ok && len(t.pending) >= t.max:
		return false
	case ok && old.Equal(at):
		return true // one deadline per query in t.order
	}
	t.pending[k] = at
	t.push(deadline{k, at})
	return true
}

// Answered says whether an answer to q on f was awaited, and consumes the query: false when the answer
// is unsolicited, a duplicate, or later than the timeout.
func (t *Tracker) Answered(f Flow, q Query, now time.Time) bool {
	t.expire(now)
	k := pendingKey{f, q}
	if _, ok := t.pending[k]; !ok {
		return false
	}
	delete(t.pending, k)
	return true
}

// Len is the number of queries awaiting an answer.
func (t *Tracker) Len() int { return len(t.pending) }

// expire forgets the queries whose deadline passed. As every query waits the same timeout, deadlines
// are set in time order and expire from the front of t.order; a deadline whose query was answered or
// asked again since is passed over.
func (t *Tracker) expire(now time.Time) {
	for t.head < len(t.order) && !now.Before(t.order[t.head].at) {
		d := t.order[t.head]
		if at, ok := t.pending[d.key]; ok && at.Equal(d.at) {
			delete(t.pending, d.key)
		}
		t.order[t.head] = deadline{}
		t.head++
	}
}

// push appends a deadline. When t.order is full it drops the deadlines of queries no longer pending (or
// pending with a later deadline): at most t.max remain, so this happens at most once per t.max pushes.
func (t *Tracker) push(d deadline) {
	if len(t.order) == cap(t.order) && cap(t.order) >= 2*t.max {
		kept := t.order[:0]
		for _, o := range t.order[t.head:] {
			if at, ok := t.pending[o.key]; ok && at.Equal(o.at) {
				kept = append(kept, o)
			}
		}
		clear(t.order[len(kept):])
		t.order, t.head = kept, 0
	}
	t.order = append(t.order, d)
}
