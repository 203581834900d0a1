package nfq

import "time"

// The pool's sizing: every scaleInterval the loop samples what the workers saw and the scaler answers
// with the pool's new size.
const (
	// scaleInterval is how often the pool is sized.
	scaleInterval = 20 * time.Millisecond
	// growWait is how long a packet may wait for a worker before the pool grows: a quarter of the 2ms
	// that a new connection's verdict should take at most under load.
	growWait = 500 * time.Microsecond
	// shrinkAfter is how long some worker must have stayed idle before the pool loses one.
	shrinkAfter = time.Second
)

// sample is what the pool saw during one scaling interval.
type sample struct {
	// backlog is the number of packets waiting for a worker at the interval's end.
	backlog int
	// wait is the longest a packet waited for a worker during the interval.
	wait time.Duration
	// peak is the most workers deciding packets at once during the interval.
	peak int
}

// scaler sizes the pool within [min, max]. It doubles the pool while more packets wait than there are
// workers, adds one when only the wait for a worker climbs past growWait, and takes one away after
// every shrinkAfter in which no packet waited long and some worker never had a packet.
type scaler struct {
	min, max int
	// spare counts the intervals in a row in which the pool had an idle worker and nothing waited.
	spare int
}

// next returns the pool's size after an interval that ended with n workers and saw s.
func (c *scaler) next(n int, s sample) int {
	switch {
	case s.backlog > n:
		c.spare = 0
		return c.clamp(2 * n)
	case s.wait > growWait:
		c.spare = 0
		return c.clamp(n + 1)
	case s.peak >= n || s.backlog > 0:
		c.spare = 0
		return c.clamp(n)
	}
	if c.spare++; c.spare < int(shrinkAfter/scaleInterval) {
		return c.clamp(n)
	}
	c.spare = 0
	return c.clamp(n - 1)
}

func (c *scaler) clamp(n int) int { return min(max(n, c.min), c.max) }
