package nfq

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Metrics are the verdict loop's Prometheus series.
type Metrics struct {
	// Latency is the time from a packet's arrival at the worker to its verdict being sent.
	Latency prometheus.Histogram
	// VerdictErrors counts verdicts the kernel did not take (the packet is then dropped by the kernel).
	VerdictErrors prometheus.Counter
	// Overruns counts socket buffer overruns: packets the kernel could not hand to us.
	Overruns prometheus.Counter
	// Restarts counts workers the watchdog replaced.
	Restarts prometheus.Counter
}

// procQueues is the kernel's table of bound queues in the reading thread's network namespace: queue
// number, peer port id, packets waiting, copy mode, copy range, packets dropped because the queue was
// full, packets dropped because the socket could not take them, last packet id, 1.
const procQueues = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// kernelDrops exports the kernel's own drop counters of the sidecar's queues: what it dropped (or,
// fail-open, let through) because a queue was full or our socket could not take a packet. They are
// read at scrape time, from the guarded namespace.
type kernelDrops struct {
	netns       int
	first, last uint16
	desc        *prometheus.Desc
}

func (k *kernelDrops) Describe(ch chan<- *prometheus.Desc) { ch <- k.desc }

func (k *kernelDrops) Collect(ch chan<- prometheus.Metric) {
	table, err := readInNetNS(k.netns, procQueues)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		num, err := strconv.ParseUint(f[0], 10, 16)
		if err != nil || uint16(num) < k.first || uint16(num) > k.last {
			continue
		}
		for _, c := range []struct{ reason, value string }{{"queue_full", f[5]}, {"socket", f[6]}} {
			if n, err := strconv.ParseFloat(c.value, 64); err == nil {
				ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, n, f[0], c.reason)
			}
		}
	}
}

// readInNetNS reads a file from a thread in the network namespace netns (0: the process's own). The
// thread is thrown away afterwards rather than trusted back in the process's namespace.
func readInNetNS(netns int, path string) ([]byte, error) {
	if netns == 0 {
		return os.ReadFile(path)
	}
	type result struct {
		data []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		data, err := os.ReadFile(path)
		ch <- result{data, err}
	}()
	r := <-ch
	return r.data, r.err
}

// newWorkersGauge exports the number of workers in a loop's pool, read from size at scrape time.
func newWorkersGauge(size func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podwall_verdict_workers", Help: "Goroutines deciding queued packets: more under load, fewer when idle, within the configured bounds.",
	}, func() float64 { return float64(size()) })
}

// NewMetrics creates the series and registers them with reg when it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podwall_decision_seconds",
			Help:    "Time from a queued packet's arrival to its verdict.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 14), // 10µs .. ~80ms
		}),
		VerdictErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_verdict_errors_total", Help: "Verdicts the kernel refused.",
		}),
		Overruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_overruns_total", Help: "Queue socket overruns (packets lost before user space saw them).",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podwall_queue_watchdog_restarts_total", Help: "Verdict workers the watchdog replaced after a stall.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Latency, m.VerdictErrors, m.Overruns, m.Restarts)
	}
	return m
}

func (m *Metrics) observe(d time.Duration, err error) {
	m.Latency.Observe(d.Seconds())
	if err != nil {
		m.VerdictErrors.Inc()
	}
}
