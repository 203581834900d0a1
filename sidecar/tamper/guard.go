package tamper

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

// PollInterval is how often the generation is checked when no nftables events can be had.
const PollInterval = time.Second

// monitorReadBuffer holds the notifications of a large batch (one per rule, set and element chunk);
// a batch that overruns it is caught by the generation check.
const monitorReadBuffer = 4 << 20

// ownBacklog bounds the own generations waiting for their events: the monitor consumes them in order,
// and those whose events were missed are dropped as later ones arrive.
const ownBacklog = 256

// Guard runs the sidecar's own nftables batches and tells them from everyone else's.
type Guard struct {
	netns int
	gen   *genConn

	// mu is held across each own batch, from the generation before it to the one after: a generation
	// is judged only once the batch that made it, if it is ours, has been recorded.
	mu sync.Mutex
	// own are the generations of own batches whose events the monitor has not seen yet, ascending.
	own []uint32
	// last is the generation the sidecar's last batch made; trusted says that no other batch was
	// committed while it ran, so that last can be told apart from a foreign one.
	last    uint32
	trusted bool
}

// Change is a change to the table that the sidecar did not make.
type Change struct {
	// Generation is the generation that made it (0 if unknown).
	Generation uint32
	// By names the process that committed it, as the kernel reports it ("nft (pid 4242)").
	By string
	// What lists the changes ("delete table podwall", "add rule in chain input"); empty when the
	// change was found by generation, without events.
	What []string
}

// New opens the generation queries for the network namespace netnsFD (0: the caller's).
func New(netnsFD int) (*Guard, error) {
	g, err := dialGen(netnsFD)
	if err != nil {
		return nil, err
	}
	return &Guard{netns: netnsFD, gen: g}, nil
}

// Close releases the generation socket.
func (g *Guard) Close() error { return g.gen.close() }

// Write runs batch, which must commit at most one nftables batch, and records the generation it made
// as the sidecar's own. If another batch was committed while it ran, no generation is recorded: the
// monitor and the generation check then restore, erring on the side of one restore too many.
func (g *Guard) Write(batch func() error) error {
	return g.WriteBatches(func() (int, error) { return 1, batch() })
}

// WriteBatches is Write for batches that commit several nftables batches (a staged ruleset Apply)
// and return how many: the generations they made are the sidecar's own if no other batch was
// committed meanwhile, which the count tells.
func (g *Guard) WriteBatches(batches func() (int, error)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	before, berr := g.gen.get()
	n, err := batches()
	after, aerr := g.gen.get()
	switch {
	case berr == nil && aerr == nil && after == before:
		// Nothing was committed (the kernel refused the batch): the last own generation still holds.
	case err == nil && berr == nil && aerr == nil && n > 0 && after == before+uint32(n):
		for gen := before + 1; gen != after+1; gen++ {
			if len(g.own) == ownBacklog {
				g.own = g.own[1:]
			}
			g.own = append(g.own, gen)
		}
		g.last, g.trusted = after, true
	default:
		g.trusted = false
	}
	return err
}

// Options tell Watch what to watch and whom to call.
type Options struct {
	// Restore re-applies the policy in force (through Write) after a change the sidecar did not make.
	Restore func(Change)
	Log     logr.Logger
}

// Watch follows the namespace's nftables events until ctx ends, calling o.Restore for every batch
// that changed the podwall table (table) and was not the sidecar's. Whenever events may have been
// missed, and once at the start, the generation is checked instead. If no monitor can be opened, it
// checks the generation every PollInterval.
func (g *Guard) Watch(ctx context.Context, table string, o Options) {
	for ctx.Err() == nil {
		m, events, err := g.monitor()
		if err != nil {
			o.Log.Error(err, "nftables events unavailable; checking the ruleset's generation every second instead")
			g.poll(ctx, o)
			return
		}
		g.verify(o)
		g.follow(ctx, table, events, o)
		m.Close()
		for range events { // the monitor's goroutine may be blocked handing over a batch
		}
	}
}

func (g *Guard) monitor() (*nftables.Monitor, chan *nftables.MonitorEvents, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(nc *netlink.Conn) error {
		return nc.SetReadBuffer(monitorReadBuffer)
	})}
	if g.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(g.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("dial nftables: %w", err)
	}
	m := nftables.NewMonitor()
	events, err := c.AddGenerationalMonitor(m)
	if err != nil {
		return nil, nil, fmt.Errorf("monitor nftables: %w", err)
	}
	return m, events, nil
}

// follow hands foreign changes of the table to o.Restore until ctx ends or events are lost.
func (g *Guard) follow(ctx context.Context, table string, events chan *nftables.MonitorEvents, o Options) {
	for {
		select {
		case <-ctx.Done():
			return
		case b, ok := <-events:
			if !ok {
				o.Log.Info("nftables monitor closed; reopening and checking the ruleset")
				return
			}
			if b.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				o.Log.Error(b.GeneratedBy.Error, "nftables events missed; reopening and checking the ruleset")
				return
			}
			what := touched(b.Changes, table)
			if len(what) == 0 {
				continue
			}
			c := Change{What: what}
			if gm, ok := b.GeneratedBy.Data.(*nftables.GenMsg); ok {
				if g.ours(gm.ID) {
					continue
				}
				c.Generation, c.By = gm.ID, fmt.Sprintf("%s (pid %d)", gm.ProcComm, gm.ProcPID)
			}
			o.Restore(c)
		}
	}
}

// ours says whether gen was made by an own batch. Generations arrive in order, so own ones older than
// gen had their events missed and are dropped.
func (g *Guard) ours(gen uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.own) > 0 && int32(g.own[0]-gen) < 0 {
		g.own = g.own[1:]
	}
	if len(g.own) > 0 && g.own[0] == gen {
		g.own = g.own[1:]
		return true
	}
	return false
}

// verify restores unless the namespace's generation is the one the sidecar's last batch made. It
// cannot tell which table a foreign batch changed, so any foreign batch leads to a restore.
func (g *Guard) verify(o Options) {
	g.mu.Lock()
	cur, err := g.gen.get()
	ok := err == nil && g.trusted && cur == g.last
	g.mu.Unlock()
	if err != nil {
		o.Log.Error(err, "cannot check the ruleset's generation; restoring it")
	}
	if !ok {
		o.Restore(Change{Generation: cur})
	}
}

func (g *Guard) poll(ctx context.Context, o Options) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.verify(o)
		}
	}
}

// touched describes the changes in a batch that concern the inet table named table, or whose table
// the event does not tell (set elements, objects, rules the library cannot decode): those are taken
// to concern it. Like changes are listed once, with their number ("delete rule in chain output
// (x13)"): deleting a table deletes every rule in it.
func touched(changes []*nftables.MonitorEvent, table string) []string {
	var what []string
	count := map[string]int{}
	for _, e := range changes {
		verb := "add"
		switch e.Type {
		case nftables.MonitorEventTypeDelTable, nftables.MonitorEventTypeDelChain, nftables.MonitorEventTypeDelRule,
			nftables.MonitorEventTypeDelSet, nftables.MonitorEventTypeDelSetElem, nftables.MonitorEventTypeDelObj:
			verb = "delete"
		}
		var t *nftables.Table
		var noun string
		switch d := e.Data.(type) {
		case *nftables.Table:
			t, noun = d, "table "+d.Name
		case *nftables.Chain:
			t, noun = d.Table, "chain "+d.Name
		case *nftables.Rule:
			t, noun = d.Table, "rule in chain "+chainName(d.Chain)
		case *nftables.Set:
			t, noun = d.Table, "set "+d.Name
		case []nftables.SetElement:
			noun = fmt.Sprintf("%d set elements", len(d))
		default:
			noun = fmt.Sprintf("object (event %d)", e.Type)
		}
		if t != nil && (t.Name != table || t.Family != nftables.TableFamilyINet) {
			continue
		}
		switch count[verb+" "+noun]++; {
		case count[verb+" "+noun] > 1:
		case strings.HasPrefix(noun, "table "): // the table's own change leads: it is what the rest follows from
			what = append([]string{verb + " " + noun}, what...)
		default:
			what = append(what, verb+" "+noun)
		}
	}
	for i, w := range what {
		if n := count[w]; n > 1 {
			what[i] = fmt.Sprintf("%s (x%d)", w, n)
		}
	}
	if len(what) > maxWhat {
		what = append(what[:maxWhat], fmt.Sprintf("and %d more", len(what)-maxWhat))
	}
	return what
}

// maxWhat bounds the kinds of change listed for one batch.
const maxWhat = 16

func chainName(c *nftables.Chain) string {
	if c == nil {
		return "?"
	}
	return c.Name
}
