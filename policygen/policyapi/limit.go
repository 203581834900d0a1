package policyapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter rate-limits reports per pod. Limiters unused for an hour are forgotten when the map grows,
// so that pods that went away do not accumulate.
type limiter struct {
	every time.Duration
	burst int

	mu    sync.Mutex
	byPod map[string]*podLimit
}

type podLimit struct {
	l    *rate.Limiter
	used time.Time
}

func newLimiter(every time.Duration, burst int) *limiter {
	return &limiter{every: every, burst: burst, byPod: map[string]*podLimit{}}
}

// allow takes a token for pod, or says how long until one is available.
func (l *limiter) allow(pod string) (time.Duration, bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	pl := l.byPod[pod]
	if pl == nil {
		if len(l.byPod) >= 10000 {
			for k, v := range l.byPod {
				if now.Sub(v.used) > time.Hour {
					delete(l.byPod, k)
				}
			}
		}
		pl = &podLimit{l: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.byPod[pod] = pl
	}
	pl.used = now
	r := pl.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}
