package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
)

// ContentHash identifies a policy's content, whatever its revision. policygen serves it as the ETag
// of GET /v1/policy, so a sidecar that restarts from its cached policy can compute the ETag of what it
// holds and send it as If-None-Match, which keeps it in step even when policygen replicas numbered the
// same content differently. A Hasher computes it for a policy Stream decodes, without its rules.
func ContentHash(p *Policy) string {
	var h Hasher
	_ = p.EachRule(h.Rule) // Rule never fails
	return h.Sum(p)
}

// Hasher computes ContentHash one rule at a time: Rule takes each ingress and egress rule in policy
// order (it fits Stream's rule func), Sum the rest of the policy. The zero Hasher is ready to use.
//
// The hash is SHA-256 over the JSON of the policy without its rules and revision, then the SHA-256 of
// the ingress rules' JSON and that of the egress rules', each rule's followed by a newline: a sum of
// each part apart, so that it is the same whatever order a document gives its parts in.
type Hasher struct {
	rules [Egress]hash.Hash
}

// Rule adds a rule of direction d (Ingress or Egress). It never fails.
func (h *Hasher) Rule(d Direction, r Rule) error {
	if h.rules[d-1] == nil {
		h.rules[d-1] = sha256.New()
	}
	data := mustMarshal(r)
	h.rules[d-1].Write(append(data, '\n'))
	return nil
}

// Sum returns the hash of the rules added so far with p's other fields (p's rules are left out).
func (h *Hasher) Sum(p *Policy) string {
	rest := *p
	rest.Revision, rest.Ingress, rest.Egress = 0, nil, nil
	sum := sha256.New()
	sum.Write(mustMarshal(&rest))
	for i := range h.rules {
		if h.rules[i] == nil {
			h.rules[i] = sha256.New()
		}
		sum.Write(h.rules[i].Sum(nil))
	}
	out := sum.Sum(nil)
	return hex.EncodeToString(out[:16])
}

func mustMarshal(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic("policy: marshal: " + err.Error()) // plain data: cannot fail
	}
	return data
}
