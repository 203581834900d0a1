package dnsobs

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// CacheOptions bound what a Cache holds. Zero values take the defaults.
type CacheOptions struct {
	// MinTTL and MaxTTL clamp an answer's TTL (defaults 5s and 1h): a TTL of 0 would have the address
	// forgotten before the app connects to it, a week-long one would keep an address allowed long after
	// the name moved.
	MinTTL, MaxTTL time.Duration
	// MaxNames bounds the distinct names held (default 4096), MaxAddrs the addresses (default 16384).
	MaxNames, MaxAddrs int
}

// Defaults of CacheOptions.
const (
	DefaultMinTTL   = 5 * time.Second
	DefaultMaxTTL   = time.Hour
	DefaultMaxNames = 4096
	DefaultMaxAddrs = 16384
)

// Live is an address with its unexpired names (most recently answered first) and latest expiry.
type Live struct {
	Addr    netip.Addr
	Names   []string
	Expires time.Time
}

// Cache holds, for each address the pod resolved, the names it resolved it from, each until the TTL of
// the answer that gave it (per address and name: one name can expire while another keeps the address).
// It is bounded: when MaxNames or MaxAddrs is reached, Add refuses what would need more room rather
// than evicting a live entry, so that an app resolving many names cannot flush the addresses another
// name gave. Expired entries are never returned, and are dropped only by Expire, so that its caller
// learns every address that lost its names. A Cache is safe for concurrent use.
type Cache struct {
	o     CacheOptions
	mu    sync.RWMutex
	addrs map[netip.Addr]*addrNames
	names map[string]int // distinct name → how many addresses it holds
	next  time.Time      // the earliest expiry held (zero: none)
}

// addrNames is an address's names, most recently answered first.
type addrNames struct {
	names   []string    // never modified: rebuilt on change, so Names can hand it out
	expires []time.Time // expires[i] is when names[i] expires
	first   time.Time   // the earliest of expires
	last    time.Time   // the latest of expires
}

// NewCache returns an empty Cache.
func NewCache(o CacheOptions) (*Cache, error) {
	if o.MinTTL < 0 || o.MaxTTL < 0 || o.MaxNames < 0 || o.MaxAddrs < 0 {
		return nil, errors.New("dns cache: negative TTL or cap")
	}
	o.MinTTL = cmp.Or(o.MinTTL, DefaultMinTTL)
	o.MaxTTL = cmp.Or(o.MaxTTL, DefaultMaxTTL)
	o.MaxNames = cmp.Or(o.MaxNames, DefaultMaxNames)
	o.MaxAddrs = cmp.Or(o.MaxAddrs, DefaultMaxAddrs)
	if o.MinTTL > o.MaxTTL {
		return nil, fmt.Errorf("dns cache: minimum TTL %v over maximum TTL %v", o.MinTTL, o.MaxTTL)
	}
	return &Cache{o: o, addrs: map[netip.Addr]*addrNames{}, names: map[string]int{}}, nil
}

// Add records that r.Names resolve to r.Addr for r.TTL clamped to [MinTTL, MaxTTL]; it returns when the
// address expires for these names, and false when a cap refused it (nothing changed). A name already
// held for the address gets the new expiry, even an earlier one: the answer is the resolver's latest
// word. A record without names or address is refused.
func (c *Cache) Add(r Record, now time.Time) (expires time.Time, ok bool) {
	if !r.Addr.IsValid() || len(r.Names) == 0 {
		return time.Time{}, false
	}
	ttl := min(max(time.Duration(r.TTL)*time.Second, c.o.MinTTL), c.o.MaxTTL)
	expires = now.Add(ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.addrs[r.Addr]
	if e == nil && len(c.addrs) >= c.o.MaxAddrs {
		return time.Time{}, false
	}
	fresh := 0
	for i, n := range r.Names {
		if _, held := c.names[n]; !held && !slices.Contains(r.Names[:i], n) {
			fresh++
		}
	}
	if len(c.names)+fresh > c.o.MaxNames {
		return time.Time{}, false
	}
	if e == nil {
		e = &addrNames{}
		c.addrs[r.Addr] = e
	}
	c.put(e, r.Names, expires)
	if c.next.IsZero() || expires.Before(c.next) {
		c.next = expires
	}
	return expires, true
}

// put rebuilds e with names (expiring at exp) in front, then its other names as they were.
func (c *Cache) put(e *addrNames, names []string, exp time.Time) {
	kept := make([]string, 0, len(names)+len(e.names))
	expires := make([]time.Time, 0, cap(kept))
	for _, n := range names {
		if slices.Contains(kept, n) {
			continue
		}
		if !slices.Contains(e.names, n) {
			c.names[n]++
		}
		kept, expires = append(kept, n), append(expires, exp)
	}
	for i, n := range e.names {
		if !slices.Contains(names, n) {
			kept, expires = append(kept, n), append(expires, e.expires[i])
		}
	}
	e.set(kept, expires)
}

func (e *addrNames) set(names []string, expires []time.Time) {
	e.names, e.expires = names, expires
	e.first, e.last = slices.MinFunc(expires, time.Time.Compare), slices.MaxFunc(expires, time.Time.Compare)
}

// Names returns the unexpired names a resolved to, most recently answered first; nil for none. The
// slice is never modified afterwards (callers may keep it); Names does not allocate when nothing expired.
func (c *Cache) Names(a netip.Addr, now time.Time) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.addrs[a]
	if e == nil {
		return nil
	}
	return e.live(now)
}

// live returns e's unexpired names.
func (e *addrNames) live(now time.Time) []string {
	if now.Before(e.first) {
		return e.names
	}
	var names []string
	for i, n := range e.names {
		if now.Before(e.expires[i]) {
			names = append(names, n)
		}
	}
	return names
}

// Expire forgets expired names and returns the addresses left with none.
func (c *Cache) Expire(now time.Time) []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next.IsZero() || now.Before(c.next) {
		return nil
	}
	var gone []netip.Addr
	c.next = time.Time{}
	for a, e := range c.addrs {
		if !now.Before(e.first) {
			var names []string
			var expires []time.Time
			for i, n := range e.names {
				if now.Before(e.expires[i]) {
					names, expires = append(names, n), append(expires, e.expires[i])
				} else if c.names[n]--; c.names[n] == 0 {
					delete(c.names, n)
				}
			}
			if len(names) == 0 {
				delete(c.addrs, a)
				gone = append(gone, a)
				continue
			}
			e.set(names, expires)
		}
		if c.next.IsZero() || e.first.Before(c.next) {
			c.next = e.first
		}
	}
	return gone
}

// Live returns every address with its unexpired names and latest expiry, for a new ruleset.
func (c *Cache) Live(now time.Time) []Live {
	c.mu.RLock()
	defer c.mu.RUnlock()
	live := make([]Live, 0, len(c.addrs))
	for a, e := range c.addrs {
		if names := e.live(now); len(names) > 0 {
			live = append(live, Live{Addr: a, Names: names, Expires: e.last})
		}
	}
	return live
}

// Len returns how many distinct names and addresses the cache holds, expired ones Expire has not yet
// dropped included (they count against the caps until then).
func (c *Cache) Len() (names, addrs int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.names), len(c.addrs)
}
