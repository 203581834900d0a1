package pgclient

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"podwall.io/podwall/api/policy"
)

// TestBackoffGrowsJitteredAndBounded: attempt n waits between half and all of min·2ⁿ, capped at max.
func TestBackoffGrowsJitteredAndBounded(t *testing.T) {
	c, err := New(Options{URL: "https://policygen:9443", MinBackoff: time.Second, MaxBackoff: 30 * time.Second}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	fulls := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second}
	seen := make([]map[time.Duration]bool, len(fulls))
	for n := range seen {
		seen[n] = map[time.Duration]bool{}
	}
	for range 200 {
		retry := c.backoff
		for n, full := range fulls {
			d := retry.Step()
			if d < full/2 || d > full {
				t.Fatalf("attempt %d waits %v, want within [%v, %v]", n, d, full/2, full)
			}
			seen[n][d] = true
		}
	}
	for n := range seen {
		if len(seen[n]) < 10 {
			t.Fatalf("attempt %d waited only %d distinct times in 200 draws: not jittered", n, len(seen[n]))
		}
	}
	retry := c.backoff
	for range 1000 {
		retry.Step()
	}
	if d := retry.Step(); d > 30*time.Second || d < 15*time.Second {
		t.Fatalf("attempt 1000 waits %v, want capped at 30s", d)
	}
}

func TestNewRefusesPlainHTTP(t *testing.T) {
	if _, err := New(Options{URL: "http://policygen:9443"}, logr.Discard()); err == nil {
		t.Fatal("a plain-HTTP policygen URL was accepted; the token would travel in the clear")
	}
}

// TestBeforeConnectSeesEverySocket: BeforeConnect hears of each socket before it connects, with its
// resolved address: the connection to policygen, and the resolver's DNS sockets when the URL names a
// host. Its error aborts the dial, so that nothing here leaves the machine.
func TestBeforeConnectSeesEverySocket(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url  string
		want func(network, address string) bool
	}{
		{"https://192.0.2.7:9443", func(network, address string) bool { return network == "tcp4" && address == "192.0.2.7:9443" }},
		{"https://policygen.podwall-test.invalid:9443", func(network, address string) bool {
			_, port, _ := net.SplitHostPort(address)
			return strings.HasPrefix(network, "udp") && port == "53"
		}},
	} {
		t.Run(tc.url, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var mu sync.Mutex
			var calls []string
			before := func(network, address string) error {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, network+" "+address)
				if tc.want(network, address) {
					cancel()
				}
				return errors.New("not here")
			}
			c, err := New(Options{URL: tc.url, TokenFile: token, BeforeConnect: before, MinBackoff: time.Millisecond}, logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { c.Subscribe(ctx, nil, func(*policy.Policy) error { return nil }); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("BeforeConnect never saw the expected socket; it saw %q", calls)
			}
		})
	}
}
