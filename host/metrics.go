package host

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Error kinds, the label of wasmvisor_call_errors_total.
const (
	errTrap = iota
	errDeadline
	errMemory
	errExit
	errViolation
	errCanceled
	errUnknownHandler
	errGuest
	errNoInstance
	errOther
	numErrKinds
)

var errKindNames = [numErrKinds]string{"trap", "deadline", "memory", "exit", "violation", "canceled",
	"unknown_handler", "guest", "no_instance", "other"}

func errKind(err error) int {
	switch {
	case errors.Is(err, sandbox.ErrMemoryLimit):
		return errMemory
	case errors.Is(err, sandbox.ErrTrap):
		return errTrap
	case errors.Is(err, sandbox.ErrDeadline):
		return errDeadline
	case errors.Is(err, sandbox.ErrExit):
		return errExit
	case errors.Is(err, sandbox.ErrABIViolation):
		return errViolation
	case errors.Is(err, sandbox.ErrCanceled):
		return errCanceled
	case errors.Is(err, sandbox.ErrUnknownHandler):
		return errUnknownHandler
	case errors.Is(err, sandbox.ErrGuest):
		return errGuest
	}
	return errOther
}

// latencyBounds are the upper bounds of the call latency histogram, in seconds.
var latencyBounds = [...]float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1, 10}

// stats are a plugin's host-side counters: plain atomics on the call path, turned into
// Prometheus metrics only at scrape time.
type stats struct {
	calls    atomic.Uint64 // calls of ended members
	_        [48]byte
	errs     [numErrKinds]atomic.Uint64
	buckets  [len(latencyBounds) + 1]atomic.Uint64
	sumNanos atomic.Uint64
	timed    atomic.Uint64
}

// calls is the retired members' calls plus the live ones'. A member ending between the two
// reads may be counted twice or not at all in one scrape; the counter never goes backwards
// for long, and is exact when nothing restarts.
func (p *plugin) calls() uint64 {
	n := p.stats.calls.Load()
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil {
			n += m.inst.Calls()
		}
	}
	return n
}

func (s *stats) count(kind int) { s.errs[kind].Add(1) }

func (s *stats) observe(d time.Duration) {
	sec := d.Seconds()
	i := 0
	for i < len(latencyBounds) && sec > latencyBounds[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(uint64(d))
	s.timed.Add(1)
}

var (
	descCalls     = prometheus.NewDesc("wasmvisor_calls_total", "Calls that reached an instance.", []string{"plugin"}, nil)
	descErrors    = prometheus.NewDesc("wasmvisor_call_errors_total", "Failed calls, by kind.", []string{"plugin", "kind"}, nil)
	descLatency   = prometheus.NewDesc("wasmvisor_call_duration_seconds", "Call latency (sampled: see WithLatencySampling).", []string{"plugin"}, nil)
	descRestarts  = prometheus.NewDesc("wasmvisor_restarts_total", "Instances started after the first, per plugin.", []string{"plugin"}, nil)
	descLive      = prometheus.NewDesc("wasmvisor_instances", "Live instances.", []string{"plugin"}, nil)
	descPages     = prometheus.NewDesc("wasmvisor_memory_pages", "Linear memory of an instance, in 64 KiB pages.", []string{"plugin", "instance"}, nil)
	descPending   = prometheus.NewDesc("wasmvisor_bus_pending", "Bus messages buffered for a plugin.", []string{"plugin"}, nil)
	descBus       = prometheus.NewDesc("wasmvisor_bus_messages_total", "Bus messages by outcome.", []string{"outcome"}, nil)
	descGuest     = prometheus.NewDesc("wasmvisor_guest_counter", "A guest's own counter, read from its memory.", []string{"plugin", "instance", "metric"}, nil)
	descGuestG    = prometheus.NewDesc("wasmvisor_guest_gauge", "A guest's own gauge, read from its memory.", []string{"plugin", "instance", "metric"}, nil)
	descGuestHist = prometheus.NewDesc("wasmvisor_guest_histogram", "A guest's own histogram, read from its memory.", []string{"plugin", "instance", "metric"}, nil)
)

// collector reads the host's counters and every free instance's telemetry at scrape time.
type collector struct{ h *Host }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descErrors, descLatency, descRestarts, descLive,
		descPages, descPending, descBus, descGuest, descGuestG, descGuestHist, descOutBytes, descOutRecords} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	b := &h.bus
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.delivered.Load()), "delivered")
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.dropped.Load()), "dropped")
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.failed.Load()), "failed")
	for _, p := range h.snapshot() {
		s := &p.stats
		ch <- prometheus.MustNewConstMetric(descCalls, prometheus.CounterValue, float64(p.calls()), p.name)
		for k := range s.errs {
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.errs[k].Load()), p.name, errKindNames[k])
		}
		cum := map[float64]uint64{}
		var n uint64
		for i, bound := range latencyBounds {
			n += s.buckets[i].Load()
			cum[bound] = n
		}
		n += s.buckets[len(latencyBounds)].Load()
		ch <- prometheus.MustNewConstHistogram(descLatency, n, time.Duration(s.sumNanos.Load()).Seconds(), cum, p.name)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(p.restarts.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(p.live.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(p.pending.Load()), p.name)
		collectOutput(ch, p)
		for i := range p.slots {
			m := p.slots[i].m.Load()
			if m == nil {
				continue // down: skipped in this scrape
			}
			idx := strconv.Itoa(i)
			ch <- prometheus.MustNewConstMetric(descPages, prometheus.GaugeValue, float64(m.inst.MemoryPages()), p.name, idx)
			tel, err := m.inst.Telemetry()
			if err != nil {
				continue // busy or ended: skipped in this scrape
			}
			for _, t := range tel {
				switch t.Kind {
				case abi.Histogram:
					cum := make(map[float64]uint64, len(t.Bounds))
					var n uint64
					for j, bound := range t.Bounds {
						n += t.Buckets[j]
						cum[bound] = n
					}
					ch <- prometheus.MustNewConstHistogram(descGuestHist, t.Count, t.Sum, cum, p.name, idx, t.Name)
				case abi.Counter:
					ch <- prometheus.MustNewConstMetric(descGuest, prometheus.CounterValue, t.Value, p.name, idx, t.Name)
				default:
					ch <- prometheus.MustNewConstMetric(descGuestG, prometheus.GaugeValue, t.Value, p.name, idx, t.Name)
				}
			}
		}
	}
}

func zapPlugin(name string) zap.Field { return zap.String("plugin", name) }
