package dnsobs

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/dns/dnsmessage"
)

// chainOf returns n CNAMEs c0.example.com → c1.example.com → … → cn.example.com and an A record of cn.
func chainOf(n int) []rr {
	var rrs []rr
	for i := range n {
		rrs = append(rrs, rr{owner: name(i), ttl: 300, cname: name(i + 1)})
	}
	return append(rrs, rr{owner: name(n), ttl: 300, addr: ip1})
}

func name(i int) string { return "c" + string(rune('0'+i)) + ".example.com." }

func names(n int) []string {
	var s []string
	for i := range n + 1 {
		s = append(s, strings.TrimSuffix(name(i), "."))
	}
	return s
}

func TestParseAnswer(t *testing.T) {
	qA := func(n string) Query { return Query{ID: 7, Name: n, Type: dnsmessage.TypeA} }
	for _, tc := range []struct {
		name    string
		msg     message
		cut     int // bytes cut off the end of the built message
		want    Answer
		wantErr string
	}{{
		name: "A",
		msg:  message{h: answer(7), qs: []string{"api.example.com."}, ans: []rr{{owner: "api.example.com.", ttl: 300, addr: ip1}, {owner: "api.example.com.", ttl: 200, addr: ip2}}},
		want: Answer{Query: qA("api.example.com"), Records: []Record{{ip1, 300, []string{"api.example.com"}}, {ip2, 200, []string{"api.example.com"}}}},
	}, {
		name: "AAAA",
		msg:  message{h: answer(7), qs: []string{"api.example.com."}, qtype: dnsmessage.TypeAAAA, ans: []rr{{owner: "api.example.com.", ttl: 30, addr: ip6}}},
		want: Answer{Query: Query{7, "api.example.com", dnsmessage.TypeAAAA}, Records: []Record{{ip6, 30, []string{"api.example.com"}}}},
	}, {
		name: "names compare case-insensitively and come out canonical",
		msg:  message{h: answer(7), qs: []string{"API.Example.COM."}, ans: []rr{{owner: "api.EXAMPLE.com.", ttl: 60, cname: "Edge.CDN.net."}, {owner: "EDGE.cdn.NET.", ttl: 90, addr: ip1}}},
		want: Answer{Query: qA("api.example.com"), Records: []Record{{ip1, 60, []string{"api.example.com", "edge.cdn.net"}}}},
	}, {
		name: "CNAME chain: every name, TTL the smallest along it",
		msg: message{h: answer(7), qs: []string{"www.example.com."}, ans: []rr{
			{owner: "www.example.com.", ttl: 600, cname: "cdn.example.net."},
			{owner: "cdn.example.net.", ttl: 60, cname: "edge.example.org."},
			{owner: "edge.example.org.", ttl: 300, addr: ip1},
			{owner: "edge.example.org.", ttl: 30, addr: ip6},
		}},
		want: Answer{Query: qA("www.example.com"), Records: []Record{
			{ip1, 60, []string{"www.example.com", "cdn.example.net", "edge.example.org"}},
			{ip6, 30, []string{"www.example.com", "cdn.example.net", "edge.example.org"}},
		}},
	}, {
		name: "CNAME chain in any order; addresses of a name midway",
		msg: message{h: answer(7), qs: []string{"www.example.com."}, ans: []rr{
			{owner: "edge.example.org.", ttl: 300, addr: ip1},
			{owner: "cdn.example.net.", ttl: 100, cname: "edge.example.org."},
			{owner: "cdn.example.net.", ttl: 50, addr: ip2},
			{owner: "www.example.com.", ttl: 600, cname: "cdn.example.net."},
		}},
		want: Answer{Query: qA("www.example.com"), Records: []Record{
			{ip1, 100, []string{"www.example.com", "cdn.example.net", "edge.example.org"}},
			{ip2, 50, []string{"www.example.com", "cdn.example.net"}},
		}},
	}, {
		name: "records off the chain are ignored",
		msg: message{h: answer(7), qs: []string{"x.evil.example."}, ans: []rr{
			{owner: "api.stripe.com.", ttl: 300, addr: ip1},
			{owner: "api.stripe.com.", ttl: 300, cname: "x.evil.example."},
			{owner: "www.stripe.com.", ttl: 300, cname: "api.stripe.com."},
			{owner: "x.evil.example.", ttl: 300, addr: ip3},
		}},
		want: Answer{Query: qA("x.evil.example"), Records: []Record{{ip3, 300, []string{"x.evil.example"}}}},
	}, {
		name: "a second CNAME of a name already followed is ignored",
		msg: message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{
			{owner: "a.example.com.", ttl: 300, cname: "b.example.com."},
			{owner: "a.example.com.", ttl: 300, cname: "api.stripe.com."},
			{owner: "api.stripe.com.", ttl: 300, addr: ip1},
			{owner: "b.example.com.", ttl: 300, addr: ip2},
		}},
		want: Answer{Query: qA("a.example.com"), Records: []Record{{ip2, 300, []string{"a.example.com", "b.example.com"}}}},
	}, {
		name:    "CNAME loop",
		msg:     message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, cname: "b.example.com."}, {owner: "B.example.com.", ttl: 1, cname: "a.example.com."}, {owner: "a.example.com.", ttl: 1, addr: ip1}}},
		wantErr: `CNAME loop at "a.example.com"`,
	}, {
		name:    "CNAME to itself",
		msg:     message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, cname: "a.example.com."}}},
		wantErr: "CNAME loop",
	}, {
		name: "CNAME chain of MaxChain",
		msg:  message{h: answer(7), qs: []string{name(0)}, ans: chainOf(MaxChain)},
		want: Answer{Query: qA(names(0)[0]), Records: []Record{{ip1, 300, names(MaxChain)}}},
	}, {
		name:    "CNAME chain over MaxChain",
		msg:     message{h: answer(7), qs: []string{name(0)}, ans: chainOf(MaxChain + 1)},
		wantErr: "CNAME chain longer than 8",
	}, {
		name: "CNAME without addresses (NXDOMAIN at its target)",
		msg:  message{h: dnsmessage.Header{ID: 7, Response: true, RCode: dnsmessage.RCodeNameError}, qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, cname: "gone.example.com."}}},
		want: Answer{Query: qA("a.example.com"), RCode: dnsmessage.RCodeNameError},
	}, {
		name: "other record types are skipped",
		msg:  message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1}, {owner: "a.example.com.", ttl: 9, addr: ip1}}},
		want: Answer{Query: qA("a.example.com"), Records: []Record{{ip1, 9, []string{"a.example.com"}}}},
	}, {
		name: "records of a class other than IN are ignored",
		msg: message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{
			{owner: "a.example.com.", ttl: 1, cname: "api.stripe.com.", class: dnsmessage.ClassCHAOS},
			{owner: "api.stripe.com.", ttl: 1, addr: ip1},
			{owner: "a.example.com.", ttl: 1, addr: ip2, class: dnsmessage.ClassCHAOS},
		}},
		want: Answer{Query: qA("a.example.com")},
	}, {
		name:    "an A record of 5 bytes",
		msg:     message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, data: []byte{1, 2, 3, 4, 5}}}},
		wantErr: `the A record of "a.example.com" has 5 bytes of data, want 4`,
	}, {
		name: "truncated (TC) with whole records",
		msg:  message{h: dnsmessage.Header{ID: 7, Response: true, Truncated: true}, qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 9, addr: ip1}}},
		want: Answer{Query: qA("a.example.com"), Truncated: true, Records: []Record{{ip1, 9, []string{"a.example.com"}}}},
	}, {
		name: "truncated (TC) with a cut record: the whole ones",
		msg:  message{h: dnsmessage.Header{ID: 7, Response: true, Truncated: true}, qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 9, addr: ip1}, {owner: "a.example.com.", ttl: 9, addr: ip2}}},
		cut:  2,
		want: Answer{Query: qA("a.example.com"), Truncated: true, Records: []Record{{ip1, 9, []string{"a.example.com"}}}},
	}, {
		name:    "a cut record without TC",
		msg:     message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 9, addr: ip1}, {owner: "a.example.com.", ttl: 9, addr: ip2}}},
		cut:     2,
		wantErr: "answer record",
	}, {
		name: "EDNS0 OPT in the additional section",
		msg:  message{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 9, addr: ip1}}, edns: true},
		want: Answer{Query: qA("a.example.com"), Records: []Record{{ip1, 9, []string{"a.example.com"}}}},
	}, {
		name: "compression pointers",
		msg: message{h: answer(7), qs: []string{"www.example.com."}, compress: true, ans: []rr{
			{owner: "www.example.com.", ttl: 60, cname: "edge.www.example.com."},
			{owner: "edge.www.example.com.", ttl: 30, addr: ip1},
		}},
		want: Answer{Query: qA("www.example.com"), Records: []Record{{ip1, 30, []string{"www.example.com", "edge.www.example.com"}}}},
	}, {
		name:    "a query (QR clear)",
		msg:     message{h: dnsmessage.Header{ID: 7}, qs: []string{"a.example.com."}},
		wantErr: "QR bit clear",
	}, {
		name:    "no question",
		msg:     message{h: answer(7)},
		wantErr: "no question",
	}, {
		name:    "two questions",
		msg:     message{h: answer(7), qs: []string{"a.example.com.", "b.example.com."}},
		wantErr: "more than one question",
	}, {
		name:    "opcode other than QUERY",
		msg:     message{h: dnsmessage.Header{ID: 7, Response: true, OpCode: 5}, qs: []string{"a.example.com."}},
		wantErr: "opcode 5",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg.build(t)
			msg = msg[:len(msg)-tc.cut]
			// A reused Answer holding an earlier answer's records must come out as if new.
			a := Answer{Records: []Record{{Addr: ip3}}, Truncated: true, RCode: 3}
			err := ParseAnswer(msg, &a)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				if len(a.Records) != 0 {
					t.Errorf("records on error: %v", a.Records)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, a, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(Answer{})); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			for _, r := range a.Records {
				if r.Addr.Is4In6() {
					t.Errorf("%v: an A record's address is 4 bytes", r.Addr)
				}
			}
		})
	}
}

func TestParseAnswerErrorsSayWhat(t *testing.T) {
	for _, msg := range [][]byte{nil, {0, 1, 0x80}, bytes.Repeat([]byte{0xff}, 40)} {
		var a Answer
		if err := ParseAnswer(msg, &a); err == nil || !strings.HasPrefix(err.Error(), "dns answer") {
			t.Errorf("ParseAnswer(%x) = %v, want an error starting %q", msg, err, "dns answer")
		}
	}
}

// TestParseAnswerAllocations checks that parsing allocates only the names it reports.
func TestParseAnswerAllocations(t *testing.T) {
	for _, n := range []int{0, 2} {
		msg := message{h: answer(1), qs: []string{name(0)}, ans: chainOf(n)}.build(t)
		var a Answer
		allocs := testing.AllocsPerRun(100, func() {
			if err := ParseAnswer(msg, &a); err != nil || len(a.Records) != 1 {
				t.Fatal(err, a.Records)
			}
		})
		if want := float64(n + 1); allocs > want {
			t.Errorf("chain of %d: %v allocations per answer, want %v (the names)", n, allocs, want)
		}
	}
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		msg     message
		want    Query
		wantErr string
	}{{
		name: "A",
		msg:  message{h: dnsmessage.Header{ID: 42, RecursionDesired: true}, qs: []string{"API.example.com."}, edns: true},
		want: Query{42, "api.example.com", dnsmessage.TypeA},
	}, {
		name: "AAAA",
		msg:  message{h: dnsmessage.Header{ID: 43}, qs: []string{"api.example.com."}, qtype: dnsmessage.TypeAAAA},
		want: Query{43, "api.example.com", dnsmessage.TypeAAAA},
	}, {
		name: "root",
		msg:  message{h: dnsmessage.Header{ID: 44}, qs: []string{"."}, qtype: dnsmessage.TypeNS},
		want: Query{44, "", dnsmessage.TypeNS},
	}, {
		name:    "an answer (QR set)",
		msg:     message{h: answer(1), qs: []string{"a.example.com."}},
		wantErr: "QR bit set",
	}, {
		name:    "no question",
		msg:     message{h: dnsmessage.Header{ID: 1}},
		wantErr: "no question",
	}, {
		name:    "two questions",
		msg:     message{h: dnsmessage.Header{ID: 1}, qs: []string{"a.example.com.", "b.example.com."}},
		wantErr: "more than one question",
	}, {
		name:    "opcode other than QUERY",
		msg:     message{h: dnsmessage.Header{ID: 1, OpCode: 4}, qs: []string{"a.example.com."}},
		wantErr: "opcode 4",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuery(tc.msg.build(t))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q != tc.want {
				t.Errorf("query = %+v, want %+v", q, tc.want)
			}
		})
	}
	if _, err := ParseQuery([]byte{1, 2, 3}); err == nil || !strings.Contains(err.Error(), "dns query header") {
		t.Errorf("short message: err = %v", err)
	}
}

func TestSplitTCP(t *testing.T) {
	m1 := message{h: dnsmessage.Header{ID: 1}, qs: []string{"a.example.com."}}.build(t)
	m2 := message{h: answer(1), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, addr: ip1}}}.build(t)
	framed := func(msgs ...[]byte) []byte {
		var b []byte
		for _, m := range msgs {
			b = append(b, byte(len(m)>>8), byte(len(m)))
			b = append(b, m...)
		}
		return b
	}
	two := framed(m1, m2)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    [][]byte
		whole   bool
	}{
		{"empty", nil, nil, true},
		{"one", framed(m1), [][]byte{m1}, true},
		{"two", two, [][]byte{m1, m2}, true},
		{"the second cut", two[:len(two)-1], [][]byte{m1}, false},
		{"one byte of the next prefix", append(framed(m1), 0), [][]byte{m1}, false},
		{"a prefix only", two[:2], nil, false},
		{"empty message", []byte{0, 0}, [][]byte{{}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [][]byte
			whole := SplitTCP(tc.payload, func(msg []byte) { got = append(got, msg) })
			if whole != tc.whole {
				t.Errorf("whole = %v, want %v", whole, tc.whole)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkParseAnswer(b *testing.B) {
	for _, bc := range []struct {
		name string
		msg  message
	}{
		{"A", message{h: answer(1), qs: []string{"api.example.com."}, compress: true, edns: true, ans: []rr{{owner: "api.example.com.", ttl: 60, addr: ip1}}}},
		{"4A", message{h: answer(1), qs: []string{"api.example.com."}, compress: true, edns: true, ans: []rr{
			{owner: "api.example.com.", ttl: 60, addr: ip1}, {owner: "api.example.com.", ttl: 60, addr: ip2},
			{owner: "api.example.com.", ttl: 60, addr: ip3}, {owner: "api.example.com.", ttl: 60, addr: ip6},
		}}},
		{"CNAME2+A", message{h: answer(1), qs: []string{name(0)}, compress: true, edns: true, ans: chainOf(2)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			msg := bc.msg.build(b)
			var a Answer
			b.ReportAllocs()
			for b.Loop() {
				if err := ParseAnswer(msg, &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
