package ui

import (
	"slices"
	"sync"
	"time"
)

// Flows counts reported connections (allows as well as denies and audits) per flow and minute over
// the last day, so that the service map can show any window up to 24 hours, and keeps each flow's
// latest verdict lines. It holds at most maxFlows flows: past that, the one seen longest ago goes.
type Flows struct {
	mu    sync.Mutex
	max   int
	flows map[flowKey]*flow
}

// flowKey is what makes two reported connections one flow: the same pod workload, direction, peer,
// port and the same verdict by the same rule.
type flowKey struct {
	Namespace, Workload, Direction string
	Peer, PeerAddr, Name           string
	Protocol                       string
	Port                           uint16
	Verdict, Rule, Evaluator       string
}

type flow struct {
	minutes map[int64]uint64 // unix minute → connections
	recent  []Event          // newest last, at most recentPerFlow
	last    time.Time
}

const (
	// flowHorizon is the longest window the map shows.
	flowHorizon = 24 * time.Hour
	// recentPerFlow is how many verdict lines of a flow an edge's details show.
	recentPerFlow = 5
	// DefaultMaxFlows bounds the flows kept when NewFlows is given 0.
	DefaultMaxFlows = 20000
)

// NewFlows returns an empty count of at most max flows.
func NewFlows(max int) *Flows {
	if max <= 0 {
		max = DefaultMaxFlows
	}
	return &Flows{max: max, flows: map[flowKey]*flow{}}
}

func keyOf(v Event) flowKey {
	return flowKey{Namespace: v.Namespace, Workload: v.Workload, Direction: v.Direction, Peer: v.Peer, PeerAddr: v.PeerAddr,
		Name: v.Name, Protocol: v.Protocol, Port: v.Port, Verdict: v.Verdict, Rule: v.Rule, Evaluator: v.Evaluator}
}

// Add counts reported entries, each at its Time, under one hold of the lock (Feed.Record adds a
// whole report's).
func (fs *Flows) Add(vs ...Event) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, v := range vs {
		fs.add(v)
	}
}

// add counts one entry; fs.mu is held. A flow's minutes past the horizon go when a new minute is
// added, the only time its count of minutes grows.
func (fs *Flows) add(v Event) {
	k := keyOf(v)
	f := fs.flows[k]
	if f == nil {
		if len(fs.flows) >= fs.max {
			fs.evict(v.Time)
		}
		f = &flow{minutes: map[int64]uint64{}}
		fs.flows[k] = f
	}
	now := v.Time.Unix() / 60
	if _, ok := f.minutes[now]; !ok {
		for m := range f.minutes {
			if now-m >= int64(flowHorizon/time.Minute) {
				delete(f.minutes, m)
			}
		}
	}
	f.minutes[now] += v.Count
	f.recent = append(f.recent, v)
	if len(f.recent) > recentPerFlow {
		f.recent = slices.Delete(f.recent, 0, len(f.recent)-recentPerFlow)
	}
	if v.Time.After(f.last) {
		f.last = v.Time
	}
}

// evict drops the flows not seen within flowHorizon of now, or else the one seen longest ago; fs.mu
// is held.
func (fs *Flows) evict(now time.Time) {
	var oldest flowKey
	var at time.Time
	for k, f := range fs.flows {
		if now.Sub(f.last) > flowHorizon {
			delete(fs.flows, k)
			continue
		}
		if at.IsZero() || f.last.Before(at) {
			oldest, at = k, f.last
		}
	}
	if len(fs.flows) >= fs.max {
		delete(fs.flows, oldest)
	}
}

// FlowCount is one flow's connections within a window and its latest verdict lines.
type FlowCount struct {
	Event          // the latest verdict line, whose Count is the window's
	Recent []Event `json:"recent"`
}

// Since returns the flows seen since from, each with its connections since then (counted by whole
// minutes). It holds the lock that Add waits for, so it skips the flows not seen since from without
// summing their minutes.
func (fs *Flows) Since(from time.Time) []FlowCount {
	first := from.Unix() / 60
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []FlowCount
	for _, f := range fs.flows {
		if f.last.Unix()/60 < first {
			continue // not seen in the window: none of its minutes counts
		}
		var n uint64
		for m, c := range f.minutes {
			if m >= first {
				n += c
			}
		}
		if n == 0 {
			continue
		}
		latest := f.recent[len(f.recent)-1]
		latest.Count = n
		out = append(out, FlowCount{Event: latest, Recent: slices.Clone(f.recent)})
	}
	return out
}
