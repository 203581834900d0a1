package dnsobs

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

var (
	t0   = time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	flow = Flow{Server: netip.MustParseAddrPort("10.96.0.10:53"), Client: netip.MustParseAddrPort("10.0.0.5:40000"), Proto: 17}
	qry  = Query{ID: 99, Name: "api.example.com", Type: dnsmessage.TypeA}
)

func TestTrackerMatches(t *testing.T) {
	otherFlow := func(f func(*Flow)) Flow { g := flow; f(&g); return g }
	otherQuery := func(f func(*Query)) Query { r := qry; f(&r); return r }
	for _, tc := range []struct {
		name string
		f    Flow
		q    Query
	}{
		{"other ID", flow, otherQuery(func(q *Query) { q.ID++ })},
		{"other name", flow, otherQuery(func(q *Query) { q.Name = "api.stripe.com" })},
		{"other type", flow, otherQuery(func(q *Query) { q.Type = dnsmessage.TypeAAAA })},
		{"other server", otherFlow(func(f *Flow) { f.Server = netip.MustParseAddrPort("10.96.0.11:53") }), qry},
		{"other server port", otherFlow(func(f *Flow) { f.Server = netip.MustParseAddrPort("10.96.0.10:5353") }), qry},
		{"other client port", otherFlow(func(f *Flow) { f.Client = netip.MustParseAddrPort("10.0.0.5:40001") }), qry},
		{"other protocol", otherFlow(func(f *Flow) { f.Proto = 6 }), qry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(10, 5*time.Second)
			if !tr.Asked(flow, qry, t0) {
				t.Fatal("Asked refused")
			}
			if tr.Answered(tc.f, tc.q, t0) {
				t.Fatal("a mismatched answer was accepted")
			}
			if !tr.Answered(flow, qry, t0) {
				t.Fatal("the matching answer was refused after a mismatched one")
			}
			if tr.Answered(flow, qry, t0) {
				t.Fatal("a duplicate answer was accepted")
			}
		})
	}
}

// TestTrackerCanonicalQuestion pairs a query and its answer through the parsers: the question's case
// may differ (DNS 0x20 randomization), the canonical names match.
func TestTrackerCanonicalQuestion(t *testing.T) {
	q, err := ParseQuery(message{h: dnsmessage.Header{ID: 5}, qs: []string{"aPi.ExAmple.com."}}.build(t))
	if err != nil {
		t.Fatal(err)
	}
	var a Answer
	if err := ParseAnswer(message{h: answer(5), qs: []string{"ApI.eXample.COM."}}.build(t), &a); err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(10, time.Second)
	tr.Asked(flow, q, t0)
	if !tr.Answered(flow, a.Query, t0) {
		t.Fatalf("answer %+v refused for query %+v", a.Query, q)
	}
}

func TestTrackerTimeout(t *testing.T) {
	tr := NewTracker(10, 5*time.Second)
	tr.Asked(flow, qry, t0)
	if !tr.Answered(flow, qry, t0.Add(5*time.Second-time.Nanosecond)) {
		t.Fatal("an answer within the timeout was refused")
	}
	tr.Asked(flow, qry, t0)
	if tr.Answered(flow, qry, t0.Add(5*time.Second)) {
		t.Fatal("an answer at the timeout was accepted")
	}
	if tr.Len() != 0 {
		t.Fatalf("Len = %d after the timeout, want 0", tr.Len())
	}
}

// TestTrackerRetransmission: a query asked again waits the timeout from its last sending, and is one
// entry.
func TestTrackerRetransmission(t *testing.T) {
	tr := NewTracker(10, 5*time.Second)
	tr.Asked(flow, qry, t0)
	tr.Asked(flow, qry, t0.Add(4*time.Second))
	if tr.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tr.Len())
	}
	if !tr.Answered(flow, qry, t0.Add(8*time.Second)) {
		t.Fatal("an answer within the timeout of the retransmission was refused")
	}
}

func TestTrackerBounded(t *testing.T) {
	tr := NewTracker(2, 5*time.Second)
	q2, q3 := qry, qry
	q2.ID, q3.ID = 2, 3
	if !tr.Asked(flow, qry, t0) || !tr.Asked(flow, q2, t0.Add(time.Second)) {
		t.Fatal("Asked refused below the limit")
	}
	if tr.Asked(flow, q3, t0.Add(time.Second)) {
		t.Fatal("Asked accepted over the limit")
	}
	if !tr.Asked(flow, qry, t0.Add(time.Second)) {
		t.Fatal("a retransmission was refused at the limit")
	}
	if !tr.Answered(flow, qry, t0.Add(time.Second)) {
		t.Fatal("the oldest query was evicted")
	}
	if !tr.Asked(flow, q3, t0.Add(time.Second)) {
		t.Fatal("Asked refused after an answer made room")
	}
	// q2 times out at t0+6s, q3 at t0+6s: both make room.
	if !tr.Asked(flow, qry, t0.Add(6*time.Second)) || tr.Len() != 1 {
		t.Fatalf("Asked after the timeout: Len = %d, want 1", tr.Len())
	}
}

// TestTrackerMemoryBounded: queries answered at once, at any rate, keep the deadline list bounded.
func TestTrackerMemoryBounded(t *testing.T) {
	tr := NewTracker(8, time.Hour)
	q := qry
	for i := range 10000 {
		q.ID = uint16(i)
		now := t0.Add(time.Duration(i) * time.Millisecond)
		if !tr.Asked(flow, q, now) || !tr.Answered(flow, q, now) {
			t.Fatalf("query %d refused", i)
		}
	}
	if len(tr.order) > 4*tr.max {
		t.Fatalf("%d deadlines held for %d queries", len(tr.order), tr.Len())
	}
}

func TestTrackerAllocations(t *testing.T) {
	tr := NewTracker(16, time.Second)
	now := t0
	// Warm up the map and the deadline list to their working size.
	for range 100 {
		tr.Asked(flow, qry, now)
		tr.Answered(flow, qry, now)
		now = now.Add(time.Millisecond)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		tr.Asked(flow, qry, now)
		tr.Answered(flow, qry, now)
		now = now.Add(time.Millisecond)
	})
	if allocs > 0 {
		t.Errorf("%v allocations per query", allocs)
	}
}
