package policy

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// maxSize bounds a policy document: 64 MiB holds a policy of well over a million peers.
const maxSize = 64 << 20

// Decode parses a policy from JSON or YAML, rejecting unknown fields, and validates it. A policy that
// does not decode or validate is returned as an error and never partly.
func Decode(data []byte) (*Policy, error) {
	if len(data) > maxSize {
		return nil, fmt.Errorf("policy is %d bytes, over the %d limit", len(data), maxSize)
	}
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
