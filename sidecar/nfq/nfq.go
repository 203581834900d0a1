// Package nfq is the capture side of the verdict pipeline: it binds the sidecar's NFQUEUE queues, hands
// each queued packet to a Handler and returns the Handler's verdict to the kernel. One worker serves each
// queue (the ruleset fans connections out over the queues), and a watchdog replaces a worker whose handler
// has hung: the queue's bypass flag only helps while nothing is bound, so a bound but stuck listener would
// otherwise stall every new connection of the pod.
package nfq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
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

// Handler decides a queued packet. It runs on the queue's worker goroutine and must not block for long:
// the watchdog replaces a worker whose handler runs past Options.StallTimeout.
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
	// StallTimeout is how long one handler call may run before the watchdog replaces the worker
	// (default 2s).
	StallTimeout time.Duration
	// Metrics receives the queues' counters; nil counts nothing.
	Metrics *Metrics
	// Registerer, when set, also exports the kernel's drop counters of the queues.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
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
		o.CopyLen = copyLen
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
}

// copyLen is how much of each packet the kernel copies to us by default: enough for an IPv6 header, a
// few extension headers and the transport ports, far less than a full segment.
const copyLen = 256

// Loop is a set of bound queues and their watchdog.
type Loop struct {
	opts    Options
	workers []*worker
	log     logr.Logger
}

// Bind binds every queue, so that the kernel hands packets to h from the moment Bind returns. It fails
// when a queue cannot be bound (another process holds it, or NET_ADMIN is missing).
func Bind(ctx context.Context, opts Options, h Handler, log logr.Logger) (*Loop, error) {
	opts.setDefaults()
	l := &Loop{opts: opts, log: log}
	for i := range opts.QueueCount {
		num := opts.QueueNum + i
		w := &worker{num: num, opts: &l.opts, handle: h, log: log.WithValues("queue", num)}
		if err := w.start(ctx); err != nil {
			l.stop()
			return nil, err
		}
		l.workers = append(l.workers, w)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(&kernelDrops{netns: opts.NetNS, first: opts.QueueNum,
			last: opts.QueueNum + opts.QueueCount - 1, desc: prometheus.NewDesc("podwall_queue_kernel_drops_total",
				"Packets the kernel could not queue to the sidecar (dropped, or accepted when failing open), by queue and reason.",
				[]string{"queue", "reason"}, nil)}); err != nil {
			l.stop()
			return nil, fmt.Errorf("register queue drop counters: %w", err)
		}
	}
	log.Info("verdict loop bound", "queues", opts.QueueCount, "first", opts.QueueNum)
	return l, nil
}

// Run watches the workers until ctx ends, then unbinds the queues.
func (l *Loop) Run(ctx context.Context) {
	tick := time.NewTicker(l.opts.StallTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.stop()
			return
		case <-tick.C:
			for _, w := range l.workers {
				w.watch(ctx)
			}
		}
	}
}

func (l *Loop) stop() {
	for _, w := range l.workers {
		w.stop()
	}
}

// worker serves one queue through one netlink socket.
type worker struct {
	num    uint16
	opts   *Options
	handle Handler
	log    logr.Logger

	mu     sync.Mutex
	nf     *nfqueue.Nfqueue
	cancel context.CancelFunc
	// busySince is the UnixNano at which the running handler call started, 0 when idle.
	busySince atomic.Int64
}

func (w *worker) start(ctx context.Context) error {
	flags := uint32(0)
	if w.opts.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NetNS:        w.opts.NetNS,
		NfQueue:      w.num,
		MaxQueueLen:  w.opts.MaxQueueLen,
		MaxPacketLen: w.opts.CopyLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		AfFamily:     unix.AF_INET,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("open queue %d: %w", w.num, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	if err := nf.RegisterWithErrorFunc(wctx, w.hook(nf), w.onError(wctx)); err != nil {
		cancel()
		nf.Close()
		return fmt.Errorf("bind queue %d: %w", w.num, err)
	}
	w.mu.Lock()
	w.nf, w.cancel = nf, cancel
	w.mu.Unlock()
	return nil
}

func (w *worker) hook(nf *nfqueue.Nfqueue) nfqueue.HookFunc {
	return func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		start := time.Now()
		w.busySince.Store(start.UnixNano())
		p := Packet{Mark: deref(a.Mark), InDev: deref(a.InDev), OutDev: deref(a.OutDev)}
		if a.Payload != nil {
			p.Payload = *a.Payload
		}
		v := w.handle(p)
		var err error
		if v.Mark != 0 {
			err = nf.SetVerdictWithOption(*a.PacketID, v.Action, nfqueue.WithMark(v.Mark))
		} else {
			err = nf.SetVerdict(*a.PacketID, v.Action)
		}
		w.busySince.Store(0)
		w.opts.Metrics.observe(time.Since(start), err)
		if err != nil {
			w.log.V(1).Info("set verdict", "error", err.Error())
		}
		return 0
	}
}

func (w *worker) onError(ctx context.Context) nfqueue.ErrorFunc {
	return func(err error) int {
		if ctx.Err() != nil || errors.Is(err, unix.EBADF) {
			return 1
		}
		if errors.Is(err, unix.ENOBUFS) {
			w.opts.Metrics.Overruns.Inc()
			return 0
		}
		w.log.Error(err, "receive from queue")
		return 0
	}
}

// watch replaces the worker when its handler has run past the stall timeout. Closing the socket makes
// the kernel unbind the queue (dropping what it held, which TCP retransmits), so a fresh socket can bind
// it; the hung goroutine is left to finish on its own and its late verdict goes nowhere.
func (w *worker) watch(ctx context.Context) {
	since := w.busySince.Load()
	if since == 0 || time.Since(time.Unix(0, since)) < w.opts.StallTimeout {
		return
	}
	w.log.Info("verdict loop stalled; rebinding the queue", "stalled", time.Since(time.Unix(0, since)).String())
	w.opts.Metrics.Restarts.Inc()
	w.mu.Lock()
	old, cancel := w.nf, w.cancel
	w.mu.Unlock()
	cancel()
	old.Con.Close()
	go old.Close() // waits for the hung handler; never on the watchdog's path
	w.busySince.Store(0)
	if err := w.start(ctx); err != nil && ctx.Err() == nil {
		w.log.Error(err, "rebind queue; retrying at the next watchdog tick")
		w.busySince.Store(since) // stay "stalled" so the next tick tries again
	}
}

func (w *worker) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.cancel()
		w.nf.Close()
	}
}

func deref(p *uint32) uint32 {
	if p == nil {
		return 0
	}
	return *p
}
