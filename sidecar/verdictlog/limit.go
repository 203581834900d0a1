package verdictlog

import (
	"time"

	"golang.org/x/time/rate"

	"podwall.io/podwall/api/policy"
)

// newLimiter returns the token bucket every line of one verdict passes: r lines a second, at most burst at once. A
// rate of zero means no limit. The Logger passes its own clock (Options.Now) to each AllowN.
func newLimiter(r float64, burst int) *rate.Limiter {
	if r == 0 {
		return rate.NewLimiter(rate.Inf, burst)
	}
	return rate.NewLimiter(rate.Limit(r), burst)
}

// maxFirstKeys bounds the memory of the "first" filter. Past it the filter forgets and starts a new
// interval early: some allows are logged twice, none is lost.
const maxFirstKeys = 1 << 16

// firstKey identifies a connection for AllowsFirst: direction, peer, port, DNS name (dst_name) and
// the rule, so that a new policy revision allowing the same peer by another rule shows once, and each
// name a DNS query asks a resolver for shows once.
type firstKey struct {
	dir              policy.Direction
	port             uint16
	peer, name, rule string
}

// firstFilter remembers which keys had an allow logged in the current interval.
type firstFilter struct {
	interval time.Duration
	start    time.Time
	seen     map[firstKey]struct{}
}

// seenBefore reports whether k already had a line in this interval; it does not record k (see mark),
// so that an allow the rate limit suppresses does not count as logged.
func (f *firstFilter) seenBefore(k firstKey, now time.Time) bool {
	if now.Sub(f.start) >= f.interval || now.Before(f.start) || len(f.seen) >= maxFirstKeys {
		clear(f.seen)
		f.start = now
	}
	_, ok := f.seen[k]
	return ok
}

func (f *firstFilter) mark(k firstKey) { f.seen[k] = struct{}{} }

// suppressed counts the lines not written since the last summary.
type suppressed struct {
	rateLimited, dropped uint64
	byVerdict            [policy.Revoked + 1]uint64
	since                time.Time
}

// add counts n lines of verdict v suppressed, by the rate limit or dropped.
func (s *suppressed) add(v policy.Verdict, now time.Time, rateLimited bool, n uint64) {
	if s.rateLimited+s.dropped == 0 {
		s.since = now
	}
	if rateLimited {
		s.rateLimited += n
	} else {
		s.dropped += n
	}
	if int(v) < len(s.byVerdict) {
		s.byVerdict[v] += n
	}
}

func (s *suppressed) any() bool { return s.rateLimited+s.dropped > 0 }
