// Package nfq is the capture side of the verdict pipeline: it binds the sidecar's NFQUEUE queues, hands
// each queued packet to a Handler and returns the Handler's verdict to the kernel.
//
// One goroutine, the reader, reads each queue (the ruleset fans connections out over the queues) on
// its netlink socket: each wake-up receives what the socket holds, one message per receive, and
// copies out of each only its payload. The reader decides what it read itself, packet after packet,
// so that the common case, a few new connections at a time, costs no hand-over between goroutines.
// Should a decision take long, a new reader takes the queue over and the slow one joins a pool of
// workers shared by the queues, to which it hands the rest of the burst it read. The pool
// keeps between Options.MinWorkers and Options.MaxWorkers workers: it grows while packets wait for a
// worker and shrinks when workers stay idle (see scaler). Packets are answered in whatever order
// their deciders finish, so two packets of one queue may be reinjected in another order than they
// were queued; only the opening packets of connections are queued, each answered on its own.
//
// Every packet read gets exactly one verdict: its decider's, or, from the watchdog, a drop when its
// handler has run past Options.StallTimeout (the worker or reader is then written off and replaced,
// so that a hung handler does not stall the pod's new connections for longer). On shutdown the
// readers and workers answer every packet read, and what the sockets still hold, before the queues are
// unbound; what the kernel still holds then it drops as it unbinds them, and a fail-closed ruleset
// refuses new connections from then on.
package nfq

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Packet is what the kernel tells about one queued packet.
type Packet struct {
	// Payload starts at the L3 header; it is only valid during the Handler call.
	Payload []byte
	// Mark is the packet mark when it was queued.
	Mark uint32
	// InDev and OutDev are interface indexes; 0 when absent (OutDev on input, InDev on output).
	InDev, OutDev uint32
}

// Reply tells the kernel what to do with a packet.
type Reply struct {
	// Action is nfqueue.NfAccept, nfqueue.NfDrop or nfqueue.NfRepeat.
	Action int
	// Mark, when not zero, is set on the packet; with NfRepeat the packet re-enters the hook carrying it.
	Mark uint32
}

// Handler decides a queued packet. Several workers call it at once, and it must not block for long:
// the watchdog writes off a worker whose handler runs past Options.StallTimeout.
type Handler func(Packet) Reply

// Options configure the queues. The zero value of each field has the documented default.
type Options struct {
	// NetNS is a descriptor of the network namespace to bind the queues in; 0 means the current one.
	NetNS int
	// QueueNum is the first queue number, QueueCount how many consecutive queues to serve (default 1).
	QueueNum, QueueCount uint16
	// MaxQueueLen bounds the packets the kernel holds per queue (default 4096).
	MaxQueueLen uint32
	// CopyLen is how much of each packet the kernel copies to the Handler (default 256: the headers a
	// connection's verdict needs); the DNS queue asks for whole packets (65535).
	CopyLen uint32
	// FailOpen asks the kernel to accept packets instead of dropping them when a queue is full.
	FailOpen bool
	// StallTimeout is how long one handler call may run before the watchdog answers its packet with a
	// drop and replaces the worker (default 2s).
	StallTimeout time.Duration
	// MinWorkers and MaxWorkers bound the workers deciding the queues' packets (defaults 1, and
	// MinWorkers: a pool of fixed size). Bind refuses a MaxWorkers under MinWorkers.
	MinWorkers, MaxWorkers int
	// Metrics receives the queues' counters; nil counts nothing.
	Metrics *Metrics
	// Registerer, when set, also exports the kernel's drop counters of the queues and the number of
	// workers.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() error {
	if o.QueueCount == 0 {
		o.QueueCount = 1
	}
	if o.MaxQueueLen == 0 {
		o.MaxQueueLen = 4096
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 2 * time.Second
	}
	if o.CopyLen == 0 {
		o.CopyLen = HeadersLen
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.MinWorkers == 0 {
		o.MinWorkers = 1
	}
	if o.MaxWorkers == 0 {
		o.MaxWorkers = o.MinWorkers
	}
	if o.MinWorkers < 1 || o.MaxWorkers < o.MinWorkers {
		return fmt.Errorf("verdict workers: min %d, max %d: want 1 ≤ min ≤ max", o.MinWorkers, o.MaxWorkers)
	}
	return nil
}

// HeadersLen is how much of each packet the kernel copies to us by default: enough for an IPv6 header, a
// few extension headers and the transport ports, far less than a full segment.
const HeadersLen = 256

// Loop is a set of bound queues, the pool of workers that decides their packets, and its watchdog.
type Loop struct {
	opts   Options
	handle Handler
	log    logr.Logger
	queues []*queue

	// jobs holds the packets read until a worker takes them. It has room for every packet the kernel
	// may hold without a verdict (MaxQueueLen per queue), so a reader never waits for it.
	jobs chan *job
	// closing is held for reading while a reader hands a packet over, and for writing while stop
	// closes jobs; closed says it has, and readers then decide what they read themselves.
	closing sync.RWMutex
	closed  bool
	// shrink takes one idle worker out of the pool.
	shrink chan struct{}
	// wake tells Run, which stops sizing an idle pool at its minimum (and says so in resting), that a
	// packet was read.
	wake    chan struct{}
	resting atomic.Bool

	// mu guards the pool.
	mu sync.Mutex
	// workers is the pool: the workers started and neither retired nor written off.
	workers map[*worker]struct{}
	// logged is the pool's size as last logged.
	logged int
	// stopping is set once stop has begun: no worker is started after it.
	stopping bool
	// running counts the pool's workers for stop to wait on; a worker written off leaves it at once.
	running sync.WaitGroup
	// reading counts the queues' readers the same way: a reader leaves it when it ends, becomes a
	// worker or is written off.
	reading sync.WaitGroup
	scale   scaler

	// busy is the number of workers deciding a packet, peak its highest since the last sample, and
	// waited the longest a packet waited for a worker since then (ns): what the scaler samples.
	busy, peak atomic.Int64
	waited     atomic.Int64
}

// queue is one bound queue and its reader.
type queue struct {
	sock *socket
	log  logr.Logger
	// reader is the goroutine reading the queue now (see read).
	reader atomic.Pointer[reader]
}

// job is one packet read from a queue, until it is answered.
type job struct {
	q   *queue
	id  uint32
	pkt Packet
	// read is when the packet was read, taken when a worker took it.
	read, taken time.Time
	// answered is set by whoever answers the packet: its worker, or the watchdog.
	answered atomic.Bool
}

// worker is one goroutine of the pool, or a queue's reader. cur is the packet it is deciding, nil
// when idle.
type worker struct {
	cur atomic.Pointer[job]
}

// reader is a queue's reader: a worker outside the pool that reads the queue and decides what it
// reads, and the rest of the burst it read last, which it gives up when it stops reading (see
// takeRest).
type reader struct {
	worker
	mu   sync.Mutex
	rest []received
	read time.Time
}

// next takes the next packet of the reader's burst, if it has one left.
func (r *reader) next(q *queue) (*job, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rest) == 0 {
		return nil, false
	}
	p := r.rest[0]
	r.rest = r.rest[1:]
	return &job{q: q, id: p.id, pkt: p.pkt, read: r.read}, true
}

// takeRest takes the packets the reader has not taken yet from it, and when they were read.
func (r *reader) takeRest() ([]received, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rest := slices.Clone(r.rest)
	r.rest = nil
	return rest, r.read
}

// Bind starts the pool and binds every queue, so that the kernel hands packets to h from the moment
// Bind returns; they stay bound until Run returns. It fails when a queue cannot be bound (another
// process holds it, or NET_ADMIN is missing).
func Bind(opts Options, h Handler, log logr.Logger) (*Loop, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	l := &Loop{opts: opts, handle: h, log: log, workers: map[*worker]struct{}{},
		jobs:   make(chan *job, int(opts.QueueCount)*int(opts.MaxQueueLen)),
		shrink: make(chan struct{}),
		wake:   make(chan struct{}, 1),
		scale:  scaler{min: opts.MinWorkers, max: opts.MaxWorkers}}
	l.mu.Lock()
	l.logged = opts.MinWorkers // the line below says it
	l.resize(opts.MinWorkers)
	l.mu.Unlock()
	for i := range opts.QueueCount {
		sock, err := openSocket(&l.opts, opts.QueueNum+i)
		if err != nil {
			l.stop()
			return nil, err
		}
		q := &queue{sock: sock, log: log.WithValues("queue", opts.QueueNum+i)}
		l.queues = append(l.queues, q)
		l.mu.Lock()
		l.startReader(q, &reader{})
		l.mu.Unlock()
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{
			&kernelDrops{netns: opts.NetNS, first: opts.QueueNum, last: opts.QueueNum + opts.QueueCount - 1,
				desc: prometheus.NewDesc("podwall_queue_kernel_drops_total",
					"Packets the kernel could not queue to the sidecar (dropped, or accepted when failing open), by queue and reason.",
					[]string{"queue", "reason"}, nil)},
			newWorkersGauge(l.size),
		} {
			if err := opts.Registerer.Register(c); err != nil {
				l.stop()
				return nil, fmt.Errorf("register queue metrics: %w", err)
			}
		}
	}
	log.Info("verdict loop bound", "queues", opts.QueueCount, "first", opts.QueueNum,
		"minWorkers", opts.MinWorkers, "maxWorkers", opts.MaxWorkers)
	return l, nil
}

// Run watches the workers and sizes the pool until ctx ends, then answers what the workers hold and
// unbinds the queues. While the pool is idle at its minimum, sizing rests until a packet is read.
func (l *Loop) Run(ctx context.Context) {
	watchdog := time.NewTicker(l.opts.StallTimeout / 4)
	defer watchdog.Stop()
	sizing := time.NewTicker(scaleInterval)
	defer sizing.Stop()
	var rescale <-chan time.Time
	if l.opts.MaxWorkers > l.opts.MinWorkers {
		rescale = sizing.C
	}
	for {
		select {
		case <-ctx.Done():
			l.stop()
			return
		case <-watchdog.C:
			l.watch()
		case <-rescale:
			if !l.rescale() {
				sizing.Stop()
				rescale = nil
				l.resting.Store(true)
				// A reader that took a packet or decided one meanwhile may have seen resting unset.
				if (len(l.jobs) > 0 || l.deciding()) && l.resting.CompareAndSwap(true, false) {
					sizing.Reset(scaleInterval)
					rescale = sizing.C
				}
			}
		case <-l.wake:
			if rescale == nil && l.opts.MaxWorkers > l.opts.MinWorkers {
				sizing.Reset(scaleInterval)
				rescale = sizing.C
			}
		}
	}
}

// stop answers every packet read and unbinds the queues. From the moment it closes jobs, the readers
// decide what they still read themselves; the workers answer what jobs holds (the watchdog still writes
// off a hung one) and exit; then the readers stop, each deciding what its socket still holds, and the
// sockets close, and the kernel drops what it holds from then on.
func (l *Loop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.closing.Lock()
	if !l.closed {
		l.closed = true
		close(l.jobs)
	}
	l.closing.Unlock()
	watchdog := time.NewTicker(l.opts.StallTimeout / 4)
	defer watchdog.Stop()
	l.await(&l.running, watchdog.C)
	for _, q := range l.queues {
		if err := q.sock.stopReading(); err != nil {
			q.log.Error(err, "stop reading the queue")
		}
	}
	l.await(&l.reading, watchdog.C)
	for _, q := range l.queues {
		q.sock.close()
	}
}

// await returns once wg is done, and writes off stalled workers and readers meanwhile.
func (l *Loop) await(wg *sync.WaitGroup, watchdog <-chan time.Time) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		case <-watchdog:
			l.watch()
		}
	}
}

// maxBurst bounds the packets a reader receives at once.
const maxBurst = 64

// startReader starts r reading q. The caller holds mu.
func (l *Loop) startReader(q *queue, r *reader) {
	l.reading.Add(1)
	q.reader.Store(r)
	go l.read(q, r)
}

// read is a reader of q: it receives what the queue holds and decides it, packet after packet, which
// spares the common case, a few new connections at a time, a hand-over between goroutines. A reader
// whose decision takes long hands the rest of its burst to the pool, the queue to a new reader, and
// joins the pool as a worker (rescale); one whose handler hangs is written off like a worker, and its
// successor inherits the rest of its burst (watch). Once stop has closed jobs and ended the reading, it
// decides what the socket still holds and returns.
func (l *Loop) read(q *queue, r *reader) {
	overrun := l.opts.Metrics.Overruns.Inc
	onError := func(err error) { q.log.Error(err, "receive from queue") }
	var burst []received
	for {
		j, ok := r.next(q)
		if !ok {
			if q.reader.Load() != r {
				l.work(&r.worker) // rescale made this reader a worker
				return
			}
			var err error
			if burst, err = q.sock.receive(burst[:0], maxBurst, overrun, onError); err != nil {
				for {
					if burst = q.sock.rest(burst[:0], maxBurst, overrun, onError); len(burst) == 0 {
						break
					}
					l.take(q, burst, time.Now())
				}
				l.reading.Done()
				return
			}
			r.mu.Lock()
			r.rest, r.read = burst, time.Now()
			r.mu.Unlock()
			continue
		}
		j.taken = time.Now()
		r.cur.Store(j)
		if l.resting.CompareAndSwap(true, false) {
			l.tell() // so that a long decision is seen
		}
		reply := l.handle(j.pkt)
		r.cur.Store(nil)
		if !l.answer(j, reply) {
			return // the watchdog wrote this reader off
		}
	}
}

// take hands the packets, read from q at read, to the pool; once stop has closed jobs, it decides
// them itself.
func (l *Loop) take(q *queue, pkts []received, read time.Time) {
	if len(pkts) == 0 {
		return
	}
	l.closing.RLock()
	defer l.closing.RUnlock()
	for _, p := range pkts {
		j := &job{q: q, id: p.id, pkt: p.pkt, read: read}
		if l.closed {
			j.taken = read
			l.answer(j, l.handle(j.pkt))
			continue
		}
		l.jobs <- j
	}
	if l.resting.CompareAndSwap(true, false) {
		l.tell()
	}
}

// tell wakes Run, which sizes the pool again.
func (l *Loop) tell() {
	select {
	case l.wake <- struct{}{}:
	default: // Run has been told already
	}
}

// work is a worker's goroutine: it decides packets until it is retired, jobs is closed, or the
// watchdog writes it off.
func (l *Loop) work(w *worker) {
	for {
		select {
		case j, ok := <-l.jobs:
			if !ok {
				l.leave(w)
				return
			}
			if !l.serve(w, j) {
				return
			}
		case <-l.shrink:
			l.leave(w)
			return
		}
	}
}

// serve decides j and answers it. It returns false when the watchdog answered j first, which means
// it wrote the worker off.
func (l *Loop) serve(w *worker, j *job) bool {
	j.taken = time.Now()
	raise(&l.waited, int64(j.taken.Sub(j.read)))
	raise(&l.peak, l.busy.Add(1))
	w.cur.Store(j)
	r := l.handle(j.pkt)
	w.cur.Store(nil)
	l.busy.Add(-1)
	return l.answer(j, r)
}

// answer sends r as j's verdict unless j was answered already, and says whether it did.
func (l *Loop) answer(j *job, r Reply) bool {
	if !j.answered.CompareAndSwap(false, true) {
		return false
	}
	err := j.q.sock.verdict(j.id, r)
	l.opts.Metrics.observe(time.Since(j.read), err)
	if err != nil {
		l.log.V(1).Info("set verdict", "error", err.Error())
	}
	return true
}

// watch writes off every worker and reader whose handler has run past the stall timeout: it answers
// the packet with a drop (as unbinding the queue would), and the hung goroutine is left to finish on
// its own, its late verdict going nowhere. A reader's queue goes to a new reader, with the rest of
// what the hung one read; the pool is topped up to its minimum.
func (l *Loop) watch() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w := range l.workers {
		if l.writeOff(w.cur.Load(), "worker") {
			delete(l.workers, w)
			l.running.Done()
		}
	}
	for _, q := range l.queues {
		r := q.reader.Load()
		if l.writeOff(r.cur.Load(), "reader") {
			rest, read := r.takeRest()
			l.startReader(q, &reader{rest: rest, read: read})
			l.reading.Done()
		}
	}
	l.resize(l.opts.MinWorkers)
}

// deciding says whether a queue's reader is deciding a packet.
func (l *Loop) deciding() bool {
	for _, q := range l.queues {
		if q.reader.Load().cur.Load() != nil {
			return true
		}
	}
	return false
}

// writeOff answers j, the packet a worker or reader (who) is deciding, with a drop if its handler has
// run past the stall timeout and nobody answered it yet, and says whether it did: the caller then
// replaces the goroutine.
func (l *Loop) writeOff(j *job, who string) bool {
	if j == nil || time.Since(j.taken) < l.opts.StallTimeout || !l.answer(j, Reply{Action: nfqueue.NfDrop}) {
		return false
	}
	l.log.Info("verdict "+who+" stalled; its packet is dropped and the "+who+" replaced",
		"stalled", time.Since(j.taken).String())
	l.opts.Metrics.Restarts.Inc()
	return true
}

// rescale samples what the pool saw since the last call and lets the scaler size it. It returns
// false when the pool is at its minimum and saw nothing: sizing may rest until a packet comes.
func (l *Loop) rescale() bool {
	s := sample{backlog: len(l.jobs), wait: time.Duration(l.waited.Swap(0)), peak: int(l.peak.Swap(l.busy.Load()))}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.workers)
	switch want := l.scale.next(n, s); {
	case want > n:
		l.resize(want)
	case want < n:
		select {
		case l.shrink <- struct{}{}: // an idle worker took it; it leaves the pool on its own
		default: // none is idle after all: the pool stays
		}
	}
	slow := false
	for _, q := range l.queues {
		r := q.reader.Load()
		j := r.cur.Load()
		if j == nil {
			continue
		}
		if time.Since(j.taken) < growWait || len(l.workers) >= l.opts.MaxWorkers || l.stopping {
			slow = true
			continue
		}
		// The reader joins the pool with the packet it decides, the rest of its burst goes to the pool,
		// and a new reader reads the queue. Stop has not begun, so jobs is open.
		l.workers[&r.worker] = struct{}{}
		l.running.Add(1)
		rest, read := r.takeRest()
		l.startReader(q, &reader{})
		l.reading.Done()
		l.take(q, rest, read)
		l.changed()
	}
	return n > l.opts.MinWorkers || s != sample{} || slow
}

// resize starts workers until the pool has n, unless stop has begun. The caller holds mu.
func (l *Loop) resize(n int) {
	for !l.stopping && len(l.workers) < n {
		w := &worker{}
		l.workers[w] = struct{}{}
		l.running.Add(1)
		go l.work(w)
	}
	l.changed()
}

// leave takes a retiring worker out of the pool.
func (l *Loop) leave(w *worker) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.workers, w)
	l.running.Done()
	l.changed()
}

// changed logs the pool's size when it differs from the one last logged. The caller holds mu.
func (l *Loop) changed() {
	if n := len(l.workers); n != l.logged && !l.stopping {
		l.log.Info("verdict workers", "workers", n, "was", l.logged)
		l.logged = n
	}
}

// size is the number of workers in the pool.
func (l *Loop) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.workers)
}

// raise sets m to v if v is higher.
func raise(m *atomic.Int64, v int64) {
	for old := m.Load(); v > old && !m.CompareAndSwap(old, v); old = m.Load() {
	}
}
