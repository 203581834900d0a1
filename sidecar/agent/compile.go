package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/decide"
	"podwall.io/podwall/sidecar/ruleset"
)

// enforced is a policy as the agent holds it: the policy without its rules (what verdict lines,
// reports and the mode need), its Decider and its compiled ruleset, each built once. The rules of a
// policy document are never held whole (readDocument): a policy of 100k peers takes a few MiB this
// way, where its rules alone would take tens.
type enforced struct {
	*policy.Policy
	decider *decide.Decider
	rules   *ruleset.Compiled
	// hash is the policy's ContentHash when the agent follows policygen (hashed), else empty.
	hash string
}

// decideOptions are the Decider's options but the mode, which swapDecider sets.
func (a *Agent) decideOptions() decide.Options {
	return decide.Options{MeshPorts: slices.Concat(a.opts.MeshOutPorts, a.opts.MeshInPorts), SearchDomains: a.resolv.Search}
}

// hashed says whether policies are given their ContentHash: only policygen asks for it (the held
// policy's ETag), and it costs a JSON encoding of every rule.
func (a *Agent) hashed() bool { return a.client != nil }

// compile builds a whole policy's Decider and ruleset (Apply's policies, and a YAML document's).
func (a *Agent) compile(p *policy.Policy) (*enforced, error) {
	return a.build(func(add func(policy.Direction, policy.Rule) error) (*policy.Policy, error) {
		if p == nil {
			return nil, errors.New("no policy")
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("invalid policy: %w", err)
		}
		rest := *p
		rest.Ingress, rest.Egress = nil, nil
		return &rest, p.EachRule(add)
	})
}

// compileStream decodes a JSON policy document from r (policy.Stream) straight into its Decider and
// ruleset, one rule at a time.
func (a *Agent) compileStream(r io.Reader) (*enforced, error) {
	return a.build(func(add func(policy.Direction, policy.Rule) error) (*policy.Policy, error) {
		return policy.Stream(r, add)
	})
}

// build builds a policy's Decider and ruleset, and its hash when policies are hashed, from rules: it
// hands add each valid rule, in policy order, and returns the rest of the policy.
func (a *Agent) build(rules func(add func(policy.Direction, policy.Rule) error) (*policy.Policy, error)) (*enforced, error) {
	var d decide.Builder
	var set ruleset.Builder
	var h policy.Hasher
	hashed := a.hashed()
	p, err := rules(func(dir policy.Direction, r policy.Rule) error {
		d.Add(dir, r)
		if hashed {
			h.Rule(dir, r)
		}
		return set.Add(dir, r)
	})
	if err != nil {
		return nil, err
	}
	e := &enforced{Policy: p}
	if e.decider, err = d.Build(p, a.decideOptions()); err != nil {
		return nil, err
	}
	if e.rules, err = set.Build(p); err != nil {
		return nil, err
	}
	if hashed {
		e.hash = h.Sum(p)
	}
	return e, nil
}

// readDocument compiles the policy document r, whose bytes also go to out as they are read (its
// hash, the cache file; nil: nowhere). A document that is not JSON (policy.NotJSON: YAML, which
// people write by hand and keep small) is read again whole from rewind, when there is one, and out is
// reset first.
func (a *Agent) readDocument(r io.Reader, rewind func() (io.Reader, error), out *copies) (*enforced, error) {
	tee := func(r io.Reader) io.Reader {
		if out == nil {
			return r
		}
		return io.TeeReader(r, out)
	}
	e, err := a.compileStream(tee(r))
	if !policy.NotJSON(err) || rewind == nil {
		return e, err
	}
	if r, err = rewind(); err != nil {
		return nil, err
	}
	if out != nil {
		out.reset()
	}
	data, err := io.ReadAll(io.LimitReader(tee(r), policy.MaxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := policy.Decode(data)
	if err != nil {
		return nil, err
	}
	return a.compile(p)
}

// readPolicyFile compiles the policy file at path, its bytes going to out as well (nil: nowhere).
func (a *Agent) readPolicyFile(path string, out *copies) (*enforced, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	rewind := func() (io.Reader, error) {
		_, err := f.Seek(0, io.SeekStart)
		return f, err
	}
	e, err := a.readDocument(f, rewind, out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// copies are where a policy document's bytes go as it is read, besides its decoder: their hash
// (the policy file watcher's), and the cache file being written (nil: none).
type copies struct {
	sum   hash.Hash
	cache *pendingCache
}

func newCopies(cache *pendingCache) *copies { return &copies{sum: sha256.New(), cache: cache} }

func (c *copies) Write(b []byte) (int, error) {
	c.sum.Write(b)
	if c.cache == nil {
		return len(b), nil
	}
	return c.cache.Write(b)
}

// hash is the hash of what was written.
func (c *copies) hash() [sha256.Size]byte { return [sha256.Size]byte(c.sum.Sum(nil)) }

// reset forgets what was written.
func (c *copies) reset() {
	c.sum.Reset()
	if c.cache != nil {
		c.cache.reset()
	}
}

// fileHash is the hash of the file at path, as copies would have it.
func fileHash(path string) ([sha256.Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	defer f.Close()
	c := newCopies(nil)
	if _, err := io.Copy(c, f); err != nil {
		return [sha256.Size]byte{}, err
	}
	return c.hash(), nil
}
