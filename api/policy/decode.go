package policy

import (
	"bytes"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// Decode parses a policy from JSON or YAML, rejecting unknown fields, and validates it. A policy that
// does not decode or validate is returned as an error and never partly.
//
// JSON, what policygen serves and the cache holds, is decoded directly (Stream): going through the
// YAML parser costs tens of times the document's size in memory, which for a policy of 100k peers took
// the sidecar's peak memory from tens of MiB to over 500. A document is read as YAML only when it is
// not JSON from its start (NotJSON): one whose rules start as JSON is JSON, and its error says where.
func Decode(data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes, over the %d limit", len(data), MaxPolicyBytes)
	}
	var rules [Egress][]Rule
	p, err := Stream(bytes.NewReader(data), func(d Direction, r Rule) error {
		rules[d-1] = append(rules[d-1], r)
		return nil
	})
	if NotJSON(err) { // YAML, including YAML's {flow: style}
		return decodeYAML(data)
	}
	if err != nil {
		return nil, err
	}
	p.Ingress, p.Egress = rules[Ingress-1], rules[Egress-1]
	return p, nil
}

func decodeYAML(data []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return &p, nil
}

// ReadFile reads and decodes a policy file.
func ReadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}
