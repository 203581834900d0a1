package dnstest

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"

	"podwall.io/podwall/api/policy"
)

// maxAliases bounds the CNAMEs followed in the table (a test may make a loop).
const maxAliases = 16

// answer returns the answer to a query message, nil when msg is no query (nothing is sent back).
func (s *Server) answer(msg []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.queries.Add(1)
	limit := 65535
	if udp {
		limit = udpLimit(&p)
	}
	rcode, records := s.lookup(q)
	resp, err := build(h, q, rcode, records, false)
	if err == nil && len(resp) > limit {
		resp, err = build(h, q, rcode, nil, true)
	}
	if err != nil {
		panic("dnstest: build answer: " + err.Error()) // a bug here, not bad input
	}
	return resp
}

// udpLimit is the largest UDP answer the query allows: its EDNS0 size, else 512 bytes.
func udpLimit(p *dnsmessage.Parser) int {
	if p.SkipAllQuestions() != nil || p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return 512
	}
	for {
		h, err := p.AdditionalHeader()
		if err != nil {
			return 512
		}
		if h.Type == dnsmessage.TypeOPT {
			return max(512, int(h.Class))
		}
		if p.SkipAdditional() != nil {
			return 512
		}
	}
}

// record is one answer record: a CNAME when cname is set, else an A or AAAA.
type record struct {
	h     dnsmessage.ResourceHeader
	cname dnsmessage.Name
	addr  netip.Addr
}

// lookup answers q from the table, following CNAMEs.
func (s *Server) lookup(q dnsmessage.Question) (dnsmessage.RCode, []record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, name := q.Name, policy.CanonicalName(q.Name.String())
	var records []record
	for range maxAliases {
		e, ok := s.table[name]
		if !ok {
			return dnsmessage.RCodeNameError, records
		}
		h := dnsmessage.ResourceHeader{Name: owner, Class: dnsmessage.ClassINET, TTL: e.ttl}
		if e.cname != "" {
			target, err := dnsmessage.NewName(e.cname + ".")
			if err != nil { // a test's bad target: a server failure, as a real server's broken zone
				return dnsmessage.RCodeServerFailure, nil
			}
			h.Type = dnsmessage.TypeCNAME
			records = append(records, record{h: h, cname: target})
			owner, name = target, e.cname
			continue
		}
		for _, a := range e.addrs {
			switch {
			case a.Is4() && q.Type == dnsmessage.TypeA:
				h.Type = dnsmessage.TypeA
				records = append(records, record{h: h, addr: a})
			case a.Is6() && q.Type == dnsmessage.TypeAAAA:
				h.Type = dnsmessage.TypeAAAA
				records = append(records, record{h: h, addr: a})
			}
		}
		return dnsmessage.RCodeSuccess, records
	}
	return dnsmessage.RCodeServerFailure, records
}

// build makes the answer message to query h, q.
func build(h dnsmessage.Header, q dnsmessage.Question, rcode dnsmessage.RCode, records []record, truncated bool) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true,
		RCode: rcode, Truncated: truncated,
	})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, r := range records {
		var err error
		switch {
		case r.h.Type == dnsmessage.TypeCNAME:
			err = b.CNAMEResource(r.h, dnsmessage.CNAMEResource{CNAME: r.cname})
		case r.h.Type == dnsmessage.TypeA:
			err = b.AResource(r.h, dnsmessage.AResource{A: r.addr.As4()})
		default:
			err = b.AAAAResource(r.h, dnsmessage.AAAAResource{AAAA: r.addr.As16()})
		}
		if err != nil {
			return nil, fmt.Errorf("record of %v: %w", r.h.Name, err)
		}
	}
	return b.Finish()
}
