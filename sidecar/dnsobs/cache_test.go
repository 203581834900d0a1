package dnsobs

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func newCache(t testing.TB, o CacheOptions) *Cache {
	t.Helper()
	c, err := NewCache(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func add(t *testing.T, c *Cache, r Record, now time.Time) time.Time {
	t.Helper()
	exp, ok := c.Add(r, now)
	if !ok {
		t.Fatalf("Add(%v %q) refused", r.Addr, r.Names)
	}
	return exp
}

func TestNewCache(t *testing.T) {
	c := newCache(t, CacheOptions{})
	if want := (CacheOptions{DefaultMinTTL, DefaultMaxTTL, DefaultMaxNames, DefaultMaxAddrs}); c.o != want {
		t.Errorf("defaults %+v, want %+v", c.o, want)
	}
	for _, tc := range []struct {
		o    CacheOptions
		want string
	}{
		{CacheOptions{MinTTL: time.Minute, MaxTTL: time.Second}, "minimum TTL 1m0s over maximum TTL 1s"},
		{CacheOptions{MaxNames: -1}, "negative"},
	} {
		if _, err := NewCache(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCache(%+v) = %v, want an error saying %q", tc.o, err, tc.want)
		}
	}
}

func TestCacheTTLClamped(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: 5 * time.Second, MaxTTL: time.Hour})
	for _, tc := range []struct {
		ttl  uint32
		want time.Duration
	}{{0, 5 * time.Second}, {4, 5 * time.Second}, {60, time.Minute}, {1 << 31, time.Hour}} {
		if got := add(t, c, Record{ip1, tc.ttl, []string{"a.example.com"}}, t0); got != t0.Add(tc.want) {
			t.Errorf("TTL %d: expires %v, want %v", tc.ttl, got.Sub(t0), tc.want)
		}
	}
}

// TestCacheExpiry: each (address, name) expires on its own; Names never returns an expired name, and
// Expire reports an address once its last name is gone.
func TestCacheExpiry(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second})
	add(t, c, Record{ip1, 100, []string{"long.example.com"}}, t0)
	add(t, c, Record{ip1, 10, []string{"short.example.com", "cdn.example.net"}}, t0)
	add(t, c, Record{ip2, 10, []string{"short.example.com"}}, t0)

	check := func(at time.Duration, a netip.Addr, want ...string) {
		t.Helper()
		if got := c.Names(a, t0.Add(at)); !slices.Equal(got, want) {
			t.Errorf("Names(%v) at %v = %q, want %q", a, at, got, want)
		}
	}
	check(9*time.Second, ip1, "short.example.com", "cdn.example.net", "long.example.com")
	check(10*time.Second, ip1, "long.example.com") // before Expire ran
	check(10*time.Second, ip2)
	if got := c.Expire(t0.Add(9 * time.Second)); got != nil {
		t.Errorf("Expire before any expiry = %v", got)
	}
	if got := c.Expire(t0.Add(10 * time.Second)); !slices.Equal(got, []netip.Addr{ip2}) {
		t.Errorf("Expire = %v, want [%v]", got, ip2)
	}
	if n, a := c.Len(); n != 1 || a != 1 {
		t.Errorf("Len = %d names, %d addresses; want 1, 1", n, a)
	}
	check(10*time.Second, ip1, "long.example.com")
	if got := c.Expire(t0.Add(100 * time.Second)); !slices.Equal(got, []netip.Addr{ip1}) {
		t.Errorf("Expire = %v, want [%v]", got, ip1)
	}
	if n, a := c.Len(); n != 0 || a != 0 {
		t.Errorf("Len = %d names, %d addresses; want 0, 0", n, a)
	}
}

// TestCacheNewAnswerWins: the latest answer for a name sets its expiry (even an earlier one) and puts it
// first.
func TestCacheNewAnswerWins(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second})
	add(t, c, Record{ip1, 100, []string{"a.example.com"}}, t0)
	add(t, c, Record{ip1, 100, []string{"b.example.com"}}, t0)
	add(t, c, Record{ip1, 5, []string{"a.example.com"}}, t0.Add(time.Second))
	if got, want := c.Names(ip1, t0.Add(time.Second)), []string{"a.example.com", "b.example.com"}; !slices.Equal(got, want) {
		t.Errorf("Names = %q, want %q", got, want)
	}
	if got, want := c.Names(ip1, t0.Add(6*time.Second)), []string{"b.example.com"}; !slices.Equal(got, want) {
		t.Errorf("Names after the new TTL = %q, want %q", got, want)
	}
}

// TestCacheCaps: at a cap, Add refuses and changes nothing; a live entry is never evicted; Expire
// makes room.
func TestCacheCaps(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second, MaxNames: 3, MaxAddrs: 2})
	add(t, c, Record{ip1, 10, []string{"a.example.com", "b.example.com"}}, t0)
	add(t, c, Record{ip2, 60, []string{"a.example.com"}}, t0)
	refuse := func(r Record, why string) {
		t.Helper()
		if _, ok := c.Add(r, t0); ok {
			t.Errorf("Add(%v %q) accepted over %s", r.Addr, r.Names, why)
		}
	}
	refuse(Record{ip3, 10, []string{"a.example.com"}}, "MaxAddrs")
	refuse(Record{ip1, 10, []string{"c.example.com", "d.example.com"}}, "MaxNames")
	if got, want := c.Names(ip1, t0), []string{"a.example.com", "b.example.com"}; !slices.Equal(got, want) {
		t.Errorf("after refusals Names = %q, want %q", got, want)
	}
	if n, a := c.Len(); n != 2 || a != 2 {
		t.Errorf("after refusals Len = %d, %d; want 2, 2", n, a)
	}
	add(t, c, Record{ip2, 10, []string{"c.example.com", "b.example.com"}}, t0) // one new name: room
	refuse(Record{ip2, 10, []string{"d.example.com"}}, "MaxNames")

	c.Expire(t0.Add(10 * time.Second)) // ip1 gone; ip2 keeps a.example.com
	add(t, c, Record{ip3, 10, []string{"d.example.com"}}, t0.Add(10*time.Second))
}

// TestCacheNamesKept: a slice Names returned is never changed by later answers or expiry.
func TestCacheNamesKept(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second})
	add(t, c, Record{ip1, 10, []string{"a.example.com"}}, t0)
	kept := c.Names(ip1, t0)
	add(t, c, Record{ip1, 10, []string{"b.example.com"}}, t0)
	c.Expire(t0.Add(time.Hour))
	if !slices.Equal(kept, []string{"a.example.com"}) {
		t.Errorf("kept slice became %q", kept)
	}
}

func TestCacheLive(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second})
	add(t, c, Record{ip1, 10, []string{"a.example.com"}}, t0)
	add(t, c, Record{ip1, 30, []string{"b.example.com"}}, t0)
	add(t, c, Record{ip2, 5, []string{"c.example.com"}}, t0)
	add(t, c, Record{ip6, 20, []string{"d.example.com"}}, t0)
	got := c.Live(t0.Add(10 * time.Second))
	slices.SortFunc(got, func(x, y Live) int { return x.Addr.Compare(y.Addr) })
	want := []Live{
		{ip1, []string{"b.example.com"}, t0.Add(30 * time.Second)},
		{ip6, []string{"d.example.com"}, t0.Add(20 * time.Second)},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Live (-want +got):\n%s", diff)
	}
}

func TestCacheRefusesEmptyRecords(t *testing.T) {
	c := newCache(t, CacheOptions{})
	for _, r := range []Record{{Addr: ip1}, {Names: []string{"a.example.com"}}} {
		if _, ok := c.Add(r, t0); ok {
			t.Errorf("Add(%+v) accepted", r)
		}
	}
}

func TestCacheNamesAllocations(t *testing.T) {
	c := newCache(t, CacheOptions{})
	add(t, c, Record{ip1, 60, []string{"www.example.com", "edge.example.net"}}, t0)
	if allocs := testing.AllocsPerRun(100, func() { c.Names(ip1, t0) }); allocs != 0 {
		t.Errorf("Names: %v allocations, want 0", allocs)
	}
}

// TestCacheConcurrent runs Add, Names, Live and Expire at once, for the race detector.
func TestCacheConcurrent(t *testing.T) {
	c := newCache(t, CacheOptions{MinTTL: time.Second, MaxNames: 50, MaxAddrs: 50})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
				a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 64)})
				switch g {
				case 0:
					c.Add(Record{a, uint32(i % 7), []string{name(i % 8)}}, now)
				case 1:
					for _, n := range c.Names(a, now) {
						if n == "" {
							t.Error("empty name")
						}
					}
				case 2:
					c.Expire(now)
				default:
					c.Live(now)
				}
			}
		})
	}
	wg.Wait()
	if n, a := c.Len(); n > 50 || a > 50 {
		t.Errorf("Len = %d, %d over the caps", n, a)
	}
}

func BenchmarkCacheNames(b *testing.B) {
	c := newCache(b, CacheOptions{})
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		c.Add(Record{a, 300, []string{"www.example.com", "edge.example.net"}}, t0)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			if len(c.Names(a, t0)) != 2 {
				b.Fatal("names missing")
			}
			i = (i + 1) % 1000
		}
	})
}
