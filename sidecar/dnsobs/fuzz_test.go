package dnsobs

import (
	"bytes"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"podwall.io/podwall/api/policy"
)

// seeds are messages of every shape the table tests build.
func seeds(f *testing.F) [][]byte {
	ms := []message{
		{h: dnsmessage.Header{ID: 1}, qs: []string{"a.example.com."}, edns: true},
		{h: answer(7), qs: []string{"www.example.com."}, compress: true, edns: true, ans: []rr{
			{owner: "www.example.com.", ttl: 600, cname: "cdn.example.net."},
			{owner: "cdn.example.net.", ttl: 60, cname: "edge.example.org."},
			{owner: "edge.example.org.", ttl: 300, addr: ip1},
			{owner: "edge.example.org.", ttl: 30, addr: ip6},
			{owner: "api.stripe.com.", ttl: 300, addr: ip2},
			{owner: "x.example.org.", ttl: 1},
		}},
		{h: answer(7), qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 1, cname: "b.example.com."}, {owner: "b.example.com.", ttl: 1, cname: "a.example.com."}}},
		{h: dnsmessage.Header{ID: 7, Response: true, Truncated: true}, qs: []string{"a.example.com."}, ans: []rr{{owner: "a.example.com.", ttl: 9, addr: ip1}}},
		{h: answer(7), qs: []string{name(0)}, ans: chainOf(MaxChain)},
	}
	var out [][]byte
	for _, m := range ms {
		out = append(out, m.build(f))
	}
	return out
}

// FuzzParseAnswer checks that ParseAnswer never panics and that every record it returns is on the
// chain from the question: each name is the CNAME target of the one before it and the last owns the
// address, as an independent full unpack of the message says.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var a Answer
		if err := ParseAnswer(msg, &a); err != nil {
			return
		}
		if a.Query.Name != policy.CanonicalName(a.Query.Name) {
			t.Fatalf("question %q not canonical", a.Query.Name)
		}
		var m dnsmessage.Message
		if err := m.Unpack(msg); err != nil {
			// A truncated or oddly ended message the record-by-record parser tolerates: check only the
			// shape of the records.
			m.Answers = nil
		}
		cnames := map[[2]string]bool{}
		owns := map[string]map[any]bool{}
		for _, r := range m.Answers {
			if r.Header.Class != dnsmessage.ClassINET {
				continue
			}
			owner := policy.CanonicalName(r.Header.Name.String())
			switch b := r.Body.(type) {
			case *dnsmessage.CNAMEResource:
				cnames[[2]string{owner, policy.CanonicalName(b.CNAME.String())}] = true
			case *dnsmessage.AResource:
				if owns[owner] == nil {
					owns[owner] = map[any]bool{}
				}
				owns[owner][b.A] = true
			case *dnsmessage.AAAAResource:
				if owns[owner] == nil {
					owns[owner] = map[any]bool{}
				}
				owns[owner][b.AAAA] = true
			}
		}
		for _, r := range a.Records {
			if len(r.Names) == 0 || len(r.Names) > MaxChain+1 || r.Names[0] != a.Query.Name {
				t.Fatalf("record %v: names %q not a chain from %q", r.Addr, r.Names, a.Query.Name)
			}
			if m.Answers == nil {
				continue
			}
			for i := 1; i < len(r.Names); i++ {
				if !cnames[[2]string{r.Names[i-1], r.Names[i]}] {
					t.Fatalf("record %v: no CNAME %q → %q in the message", r.Addr, r.Names[i-1], r.Names[i])
				}
			}
			last := r.Names[len(r.Names)-1]
			var key any = r.Addr.As16()
			if r.Addr.Is4() {
				key = r.Addr.As4()
			}
			if !owns[last][key] {
				t.Fatalf("record %v: %q owns no such address in the message", r.Addr, last)
			}
		}
	})
}

// FuzzParseQuery checks that ParseQuery never panics and gives canonical names.
func FuzzParseQuery(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		q, err := ParseQuery(msg)
		if err == nil && q.Name != policy.CanonicalName(q.Name) {
			t.Fatalf("name %q not canonical", q.Name)
		}
	})
}

// FuzzSplitTCP checks that SplitTCP never panics, hands out the payload's messages in order without
// gaps, and says whole exactly when it used the payload up.
func FuzzSplitTCP(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(append([]byte{byte(len(s) >> 8), byte(len(s))}, s...))
	}
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var framed []byte
		whole := SplitTCP(payload, func(msg []byte) {
			framed = append(framed, byte(len(msg)>>8), byte(len(msg)))
			framed = append(framed, msg...)
		})
		if !bytes.HasPrefix(payload, framed) {
			t.Fatal("messages are not the payload's, in order")
		}
		if whole != (len(framed) == len(payload)) {
			t.Fatalf("whole = %v with %d of %d bytes in messages", whole, len(framed), len(payload))
		}
	})
}
