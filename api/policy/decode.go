package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// Decode parses a policy from JSON or YAML, rejecting unknown fields, and validates it. A policy that
// does not decode or validate is returned as an error and never partly.
//
// JSON, what policygen serves and the cache holds, is decoded directly: going through the YAML
// parser costs tens of times the document's size in memory, which for a policy of 100k peers took the
// sidecar's peak memory from tens of MiB to over 500.
func Decode(data []byte) (*Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes, over the %d limit", len(data), MaxPolicyBytes)
	}
	var p Policy
	err := decodeJSON(data, &p)
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) { // YAML, including YAML's {flow: style}
		p = Policy{}
		err = yaml.UnmarshalStrict(data, &p)
	}
	if err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid policy: %w", err)
	}
	return &p, nil
}

func decodeJSON(data []byte, p *Policy) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the policy object")
	}
	return nil
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
