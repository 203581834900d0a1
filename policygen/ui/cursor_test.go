package ui

import (
	"maps"
	"strings"
	"testing"
)

func TestParseCursor(t *testing.T) {
	c, err := ParseCursor("policygen-b=40,policygen-a=12")
	if err != nil || c["policygen-a"] != 12 || c["policygen-b"] != 40 || len(c) != 2 {
		t.Fatalf("ParseCursor: %v, %v", c, err)
	}
	if s := c.String(); s != "policygen-a=12,policygen-b=40" {
		t.Errorf("String: %q, want the replicas in name order", s)
	}
	if c, err := ParseCursor(""); err != nil || len(c) != 0 {
		t.Errorf("an empty cursor: %v, %v; want an empty one", c, err)
	}
	// A plain number is what the one-replica stream's ids are: not a cursor.
	for _, bad := range []string{"7", "a=", "=7", "a=-1", "a=1,,b=2", "a=1;b=2", "a=99999999999999999999"} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q): no error", bad)
		}
	}
}

// FuzzCursor: whatever a client sends as Last-Event-ID, parsing never panics, and a cursor that
// parses says itself again in its own form.
func FuzzCursor(f *testing.F) {
	for _, s := range []string{"", "a=1", "policygen-b=40,policygen-a=12", "a=1,a=2", "7", "=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		again, err := ParseCursor(c.String())
		if err != nil || !maps.Equal(c, again) {
			t.Fatalf("%q parsed as %v, said as %q, parsed again as %v, %v", s, c, c.String(), again, err)
		}
	})
}

// FuzzReadEvents: a peer's stream, whatever it holds, is read without a panic, and each event's data
// is what its data lines said.
func FuzzReadEvents(f *testing.F) {
	for _, s := range []string{"id: 1\ndata: {}\n\n", "event: lost\ndata: 3\n\n: keep-alive\n\n", "data: a\ndata: b\n\n", "data", "\n\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = ReadEvents(strings.NewReader(s), func(event, id, data string) error {
			if strings.Contains(event, "\n") || strings.Contains(id, "\n") {
				t.Fatalf("event %q id %q span lines", event, id)
			}
			return nil
		})
	})
}
