package dnsobs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"

	"podwall.io/podwall/api/policy"
)

// MaxChain is the longest CNAME chain ParseAnswer follows from the question's name. Resolvers give up
// well before (BIND at 16 in all, Unbound at 11); an answer with a longer chain is refused whole
// rather than learned in part.
const MaxChain = 8

// Query is a DNS question as the pod asked it.
type Query struct {
	ID   uint16
	Name string // canonical (policy.CanonicalName)
	Type dnsmessage.Type
}

// Record is one address an answer gives for the question: Names is the chain from the question's name
// through each CNAME target to the owner of the A/AAAA record (canonical, question first); TTL is the
// smallest TTL along that chain.
//
// Names shares its array with the other records of the same Answer and is overwritten by the next
// ParseAnswer into that Answer: copy it (or its strings) to keep it.
type Record struct {
	Addr  netip.Addr
	TTL   uint32
	Names []string
}

// Answer is what an answer message tells. ParseAnswer reuses a's slices.
type Answer struct {
	Query     Query
	RCode     dnsmessage.RCode
	Truncated bool
	Records   []Record

	names []string // the chain's names, which Records[i].Names slice
}

// ParseQuery parses a DNS query message (no TCP length prefix): QR=0, opcode QUERY, exactly one
// question. The question's class is not checked: the name is what a policy judges.
func ParseQuery(msg []byte) (Query, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return Query{}, fmt.Errorf("dns query header: %w", err)
	}
	if h.Response {
		return Query{}, errors.New("dns query: QR bit set (an answer, not a query)")
	}
	q, err := oneQuestion(&p, h)
	if err != nil {
		return Query{}, fmt.Errorf("dns query: %w", err)
	}
	return Query{ID: h.ID, Name: canonical(q.Name), Type: q.Type}, nil
}

// oneQuestion reads the only question of a message with opcode QUERY.
func oneQuestion(p *dnsmessage.Parser, h dnsmessage.Header) (dnsmessage.Question, error) {
	if h.OpCode != 0 {
		return dnsmessage.Question{}, fmt.Errorf("opcode %d, want 0 (QUERY)", h.OpCode)
	}
	q, err := p.Question()
	if errors.Is(err, dnsmessage.ErrSectionDone) {
		return q, errors.New("no question")
	}
	if err != nil {
		return q, fmt.Errorf("question: %w", err)
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		if err != nil {
			return q, fmt.Errorf("second question: %w", err)
		}
		return q, errors.New("more than one question")
	}
	return q, nil
}

// ParseAnswer parses a DNS answer message (no TCP length prefix) into a: QR=1, opcode QUERY, exactly
// one question. It follows CNAMEs from the question's name only (records off the chain are ignored,
// see the package doc), at most MaxChain of them, and reports the A and AAAA records of the names on
// the chain. Records of other types and the authority and additional sections (an EDNS0 OPT record,
// say) are skipped unread. A truncated answer (TC) gives the records it holds whole; any other cut or
// malformed record is an error. On error a holds nothing to learn from.
func ParseAnswer(msg []byte, a *Answer) error {
	a.Query, a.RCode, a.Truncated = Query{}, 0, false
	a.Records, a.names = a.Records[:0], a.names[:0]

	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return fmt.Errorf("dns answer header: %w", err)
	}
	if !h.Response {
		return errors.New("dns answer: QR bit clear (a query, not an answer)")
	}
	q, err := oneQuestion(&p, h)
	if err != nil {
		return fmt.Errorf("dns answer: %w", err)
	}
	var c chain
	c.start(q.Name)
	for {
		grew, err := c.extend(&p, msg, h.Truncated)
		if err != nil {
			return fmt.Errorf("dns answer for %q: %w", canonical(q.Name), err)
		}
		if !grew {
			break
		}
	}
	for i := range c.n {
		a.names = append(a.names, canonical(c.names[i]))
	}
	a.Query = Query{ID: h.ID, Name: a.names[0], Type: q.Type}
	a.RCode, a.Truncated = h.RCode, h.Truncated
	if err := a.addresses(&p, msg, &c); err != nil {
		a.Records = a.Records[:0]
		return fmt.Errorf("dns answer for %q: %w", a.Query.Name, err)
	}
	return nil
}

// chain is the CNAME chain from the question's name, held as the parser gives names (no allocation).
type chain struct {
	names [MaxChain + 1]dnsmessage.Name
	ttl   [MaxChain + 1]uint32 // ttl[i]: the smallest TTL of the CNAMEs leading to names[i]
	n     int
}

func (c *chain) start(question dnsmessage.Name) {
	c.names[0], c.ttl[0], c.n = question, math.MaxUint32, 1
}

// index returns the position of name on the chain, or -1.
func (c *chain) index(name *dnsmessage.Name) int {
	for i := range c.n {
		if sameName(&c.names[i], name) {
			return i
		}
	}
	return -1
}

// extend makes one pass over the answer section and appends the target of every CNAME owned by the
// chain's last name, so that a chain whose records come in order is followed in one pass and one in
// any order in at most MaxChain. It says whether the chain grew.
func (c *chain) extend(p *dnsmessage.Parser, msg []byte, truncated bool) (bool, error) {
	if err := toAnswers(p, msg); err != nil {
		return false, err
	}
	grew := false
	for {
		h, err := p.AnswerHeader()
		if end, err := sectionEnd(err, truncated); end {
			return grew, err
		}
		if h.Type != dnsmessage.TypeCNAME || h.Class != dnsmessage.ClassINET || !sameName(&h.Name, &c.names[c.n-1]) {
			if end, err := sectionEnd(p.SkipAnswer(), truncated); end {
				return grew, err
			}
			continue
		}
		r, err := p.CNAMEResource()
		if end, err := sectionEnd(err, truncated); end {
			return grew, err
		}
		if c.index(&r.CNAME) >= 0 {
			return grew, fmt.Errorf("CNAME loop at %q", canonical(r.CNAME))
		}
		if c.n == len(c.names) {
			return grew, fmt.Errorf("CNAME chain longer than %d", MaxChain)
		}
		c.names[c.n], c.ttl[c.n] = r.CNAME, min(c.ttl[c.n-1], h.TTL)
		c.n++
		grew = true
	}
}

// addresses makes the last pass over the answer section: the A and AAAA records of names on the chain.
func (a *Answer) addresses(p *dnsmessage.Parser, msg []byte, c *chain) error {
	if err := toAnswers(p, msg); err != nil {
		return err
	}
	for {
		h, err := p.AnswerHeader()
		if end, err := sectionEnd(err, a.Truncated); end {
			return err
		}
		k := -1
		if (h.Type == dnsmessage.TypeA || h.Type == dnsmessage.TypeAAAA) && h.Class == dnsmessage.ClassINET {
			k = c.index(&h.Name)
		}
		var addr netip.Addr
		switch {
		case k < 0:
			err = p.SkipAnswer()
		// The parser reads 4 or 16 bytes whatever the record's length says: check it.
		case h.Type == dnsmessage.TypeA && h.Length != 4:
			err = fmt.Errorf("the A record of %q has %d bytes of data, want 4", a.names[k], h.Length)
		case h.Type == dnsmessage.TypeAAAA && h.Length != 16:
			err = fmt.Errorf("the AAAA record of %q has %d bytes of data, want 16", a.names[k], h.Length)
		case h.Type == dnsmessage.TypeA:
			var r dnsmessage.AResource
			r, err = p.AResource()
			addr = netip.AddrFrom4(r.A)
		default:
			var r dnsmessage.AAAAResource
			r, err = p.AAAAResource()
			addr = netip.AddrFrom16(r.AAAA)
		}
		if end, err := sectionEnd(err, a.Truncated); end {
			return err
		}
		if k >= 0 {
			a.Records = append(a.Records, Record{Addr: addr, TTL: min(c.ttl[k], h.TTL), Names: a.names[: k+1 : k+1]})
		}
	}
}

// toAnswers (re)starts p at the answer section of msg, whose header and question parsed before.
func toAnswers(p *dnsmessage.Parser, msg []byte) error {
	if _, err := p.Start(msg); err != nil {
		return err
	}
	return p.SkipAllQuestions()
}

// sectionEnd says whether the answer section ends at a parser result: at its last record, or at a cut
// or malformed record, which is an error unless the answer is truncated (TC: it gives the records it
// holds whole).
func sectionEnd(err error, truncated bool) (bool, error) {
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, dnsmessage.ErrSectionDone) || truncated:
		return true, nil
	}
	return true, fmt.Errorf("answer record: %w", err)
}

// sameName compares two names as DNS does: ASCII letters case-insensitively.
func sameName(x, y *dnsmessage.Name) bool {
	if x.Length != y.Length {
		return false
	}
	for i := range x.Length {
		if lower(x.Data[i]) != lower(y.Data[i]) {
			return false
		}
	}
	return true
}

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// canonical is the name as rules write it (policy.CanonicalName).
func canonical(n dnsmessage.Name) string { return policy.CanonicalName(n.String()) }

// SplitTCP calls fn for each whole DNS message (2-byte length prefix) in one TCP segment's payload and
// says whether the payload held whole messages only (false: a message is cut across segments).
func SplitTCP(payload []byte, fn func(msg []byte)) bool {
	for len(payload) > 0 {
		if len(payload) < 2 {
			return false
		}
		n := int(binary.BigEndian.Uint16(payload))
		if len(payload)-2 < n {
			return false
		}
		fn(payload[2 : 2+n])
		payload = payload[2+n:]
	}
	return true
}
