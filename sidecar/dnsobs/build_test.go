package dnsobs

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// rr is an answer record in a test message: a CNAME when cname is set, else an A or AAAA of addr,
// else an A record of data when it is set, else a TXT record. Its class is IN unless set.
type rr struct {
	owner string
	ttl   uint32
	cname string
	addr  netip.Addr
	data  []byte
	class dnsmessage.Class
}

// message is a test DNS message, built with dnsmessage.Builder.
type message struct {
	h        dnsmessage.Header
	qs       []string // question names (type A unless qtype is set)
	qtype    dnsmessage.Type
	ans      []rr
	edns     bool // an EDNS0 OPT record in the additional section
	compress bool
}

func (m message) build(t testing.TB) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, m.h)
	if m.compress {
		b.EnableCompression()
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.StartQuestions())
	qtype := m.qtype
	if qtype == 0 {
		qtype = dnsmessage.TypeA
	}
	for _, q := range m.qs {
		must(b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(q), Type: qtype, Class: dnsmessage.ClassINET}))
	}
	must(b.StartAnswers())
	for _, r := range m.ans {
		h := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(r.owner), Class: r.class, TTL: r.ttl}
		if h.Class == 0 {
			h.Class = dnsmessage.ClassINET
		}
		switch {
		case r.cname != "":
			must(b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(r.cname)}))
		case r.addr.Is4():
			must(b.AResource(h, dnsmessage.AResource{A: r.addr.As4()}))
		case r.addr.Is6():
			must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: r.addr.As16()}))
		case r.data != nil:
			must(b.UnknownResource(h, dnsmessage.UnknownResource{Type: dnsmessage.TypeA, Data: r.data}))
		default:
			must(b.TXTResource(h, dnsmessage.TXTResource{TXT: []string{"v=spf1 -all"}}))
		}
	}
	if m.edns {
		must(b.StartAdditionals())
		var h dnsmessage.ResourceHeader
		must(h.SetEDNS0(1232, dnsmessage.RCodeSuccess, true))
		must(b.OPTResource(h, dnsmessage.OPTResource{}))
	}
	msg, err := b.Finish()
	must(err)
	return msg
}

func answer(id uint16) dnsmessage.Header {
	return dnsmessage.Header{ID: id, Response: true, RecursionDesired: true, RecursionAvailable: true}
}

var (
	ip1 = netip.MustParseAddr("192.0.2.1")
	ip2 = netip.MustParseAddr("192.0.2.2")
	ip3 = netip.MustParseAddr("198.51.100.3")
	ip6 = netip.MustParseAddr("2001:db8::6")
)
