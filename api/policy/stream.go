package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Stream decodes a JSON policy of at most MaxPolicyBytes from r without holding its rules: each
// ingress and egress rule is validated and handed to rule as soon as it is decoded, in document order,
// and rule may keep what it is given. The Policy returned holds the rest, its Ingress and Egress
// empty. The document is validated as Decode validates it, piece by piece, so an error may come after
// rules were handed over: the caller builds what it needs from them and drops it on error, as it
// would a policy Decode refused. An error from rule ends the decode and is returned as it is.
//
// A document that is not JSON fails with an error wrapping a *json.SyntaxError; NotJSON tells whether
// that happened before any rule was handed over, so that the caller may decode it as YAML instead.
func Stream(r io.Reader, rule func(Direction, Rule) error) (*Policy, error) {
	in := &io.LimitedReader{R: r, N: MaxPolicyBytes + 1}
	s := streamer{dec: json.NewDecoder(in), rule: rule}
	s.dec.DisallowUnknownFields()
	p, err := s.policy()
	if in.N <= 0 {
		return nil, fmt.Errorf("policy is over the %d-byte limit", MaxPolicyBytes)
	}
	if err != nil {
		if s.rules == 0 {
			err = notJSON{err}
		}
		return nil, err
	}
	return p, nil
}

// NotJSON says whether err is Stream's for a document that is not JSON from its start: a YAML one,
// say (YAML's {flow: style} too), which no rule was taken from.
func NotJSON(err error) bool {
	var n notJSON
	var syntax *json.SyntaxError
	return errors.As(err, &n) && errors.As(n.err, &syntax)
}

// notJSON marks an error Stream met before handing over any rule.
type notJSON struct{ err error }

func (e notJSON) Error() string { return e.err.Error() }
func (e notJSON) Unwrap() error { return e.err }

// streamer is one Stream: the decoder, where the rules go, and the rule ids seen so far.
type streamer struct {
	dec   *json.Decoder
	rule  func(Direction, Rule) error
	ids   ruleIDs
	rules int
	seen  [Egress]bool // the rule arrays met, by direction
}

// policy decodes the top-level object. The members other than the rule arrays are gathered, as they
// were written, into an object decoded at the end with the decoder's own rules (unknown fields, keys
// in any case); the rule arrays are streamed.
func (s *streamer) policy() (*Policy, error) {
	if err := s.delim('{'); err != nil {
		return nil, err
	}
	var rest bytes.Buffer
	rest.WriteByte('{')
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return nil, decodeErr(err)
		}
		key, _ := tok.(string) // an object's keys are strings, or Token fails
		if dir := rulesKey(key); dir != 0 {
			if s.seen[dir-1] {
				return nil, fmt.Errorf("decode policy: %s given twice", dir)
			}
			s.seen[dir-1] = true
			if err := s.stream(dir); err != nil {
				return nil, err
			}
			continue
		}
		var value json.RawMessage
		if err := s.dec.Decode(&value); err != nil {
			return nil, decodeErr(err)
		}
		if rest.Len() > 1 {
			rest.WriteByte(',')
		}
		name, _ := json.Marshal(key) // a string: cannot fail
		rest.Write(name)
		rest.WriteByte(':')
		rest.Write(value)
	}
	if err := s.delim('}'); err != nil {
		return nil, err
	}
	if s.dec.More() {
		return nil, errors.New("decode policy: data after the policy object")
	}
	rest.WriteByte('}')
	var p Policy
	dec := json.NewDecoder(&rest)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, decodeErr(err)
	}
	if err := p.validateMode(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	if err := p.validateRest(&s.ids); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return &p, nil
}

// stream decodes one rule array (or null) and hands each rule over.
func (s *streamer) stream(dir Direction) error {
	tok, err := s.dec.Token()
	if err != nil {
		return decodeErr(err)
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('[') {
		return fmt.Errorf("decode policy: %s: want an array of rules", dir)
	}
	for i := 0; s.dec.More(); i++ {
		var r Rule
		if err := s.dec.Decode(&r); err != nil {
			return decodeErr(err)
		}
		if err := r.validateIn(dir); err != nil {
			return fmt.Errorf("invalid policy: %s[%d]: %w", dir, i, err)
		}
		s.ids.add(r.ID, dir, i)
		s.rules++
		if err := s.rule(dir, r); err != nil {
			return err
		}
	}
	return s.delim(']')
}

// delim reads the token d.
func (s *streamer) delim(d json.Delim) error {
	tok, err := s.dec.Token()
	if err != nil {
		return decodeErr(err)
	}
	if tok != d {
		return fmt.Errorf("decode policy: want %q, got %v", d, tok)
	}
	return nil
}

// rulesKey is the direction whose rules a key of the policy object holds, 0 for other keys. Keys
// match their field's name in any case, as encoding/json matches them.
func rulesKey(key string) Direction {
	switch {
	case strings.EqualFold(key, "ingress"):
		return Ingress
	case strings.EqualFold(key, "egress"):
		return Egress
	}
	return 0
}

func decodeErr(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("decode policy: %w", err)
}
