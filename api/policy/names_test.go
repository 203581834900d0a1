package policy

import (
	"strings"
	"testing"
)

func TestNamePatterns(t *testing.T) {
	for _, p := range []string{"api.stripe.com", "*.s3.amazonaws.com", "_sip._tcp.example.com", "a-b.example.com", "xn--bcher-kva.example"} {
		if err := ValidateNamePattern(p); err != nil {
			t.Errorf("ValidateNamePattern(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "com", "*.com", "*", "**.example.com", "a.*.example.com", "*example.com", "API.stripe.com",
		"api.stripe.com.", "-a.example.com", "a-.example.com", "a..example.com", "a b.example.com", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26) + "com"} {
		if err := ValidateNamePattern(p); err == nil {
			t.Errorf("ValidateNamePattern(%q) passed", p)
		}
	}
}

func TestMatchName(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"api.stripe.com", "api.stripe.com", true},
		{"api.stripe.com", "xapi.stripe.com", false},
		{"api.stripe.com", "stripe.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "a.example.com.evil", false},
		{"*.example.com", "aexample.com", false},
	} {
		if got := MatchName(c.pattern, c.name); got != c.want {
			t.Errorf("MatchName(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
	if got := CanonicalName("API.Stripe.COM."); got != "api.stripe.com" {
		t.Errorf("CanonicalName = %q", got)
	}
}

func TestNamesOnlyOnEgress(t *testing.T) {
	p := Policy{Mode: Protect, Ingress: []Rule{{ID: "a", Origin: OriginUser, Names: []string{"a.example.com"}}}}
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "egress rules only") {
		t.Errorf("ingress names: %v", err)
	}
	p = Policy{Mode: Protect, Egress: []Rule{{ID: "a", Origin: OriginUser, Names: []string{"*.com"}}}}
	if err := p.Validate(); err == nil {
		t.Error("pattern *.com passed")
	}
	p = Policy{Mode: Protect, Egress: []Rule{{ID: "a", Origin: OriginUser, Names: []string{"*.example.com"},
		Ports: []PortRange{{Protocol: TCP, Port: 443}}}}}
	if err := p.Validate(); err != nil {
		t.Errorf("valid name rule: %v", err)
	}
}

func TestMatchAny(t *testing.T) {
	patterns := []string{"*.example.com", "api.stripe.com"}
	if n, ok := MatchAny(patterns, []string{"cdn.net", "api.stripe.com", "a.example.com"}); !ok || n != "api.stripe.com" {
		t.Errorf("MatchAny = %q, %v: want the first matching name, api.stripe.com", n, ok)
	}
	if n, ok := MatchAny(patterns, []string{"example.com", "stripe.com"}); ok {
		t.Errorf("MatchAny = %q, want no match", n)
	}
}
