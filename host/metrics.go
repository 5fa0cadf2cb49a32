package host

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Error kinds, the label of wasmvisor_call_errors_total: the names of Kind (host.Kind, which
// falls back to sandbox.Kind) that a call can end with; any other kind counts as "other".
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
	errFailed
	errPoison
	errOther
	numErrKinds
)

var errKindNames = [numErrKinds]string{sandbox.KindTrap, sandbox.KindDeadline, sandbox.KindMemoryLimit,
	sandbox.KindExit, sandbox.KindABIViolation, sandbox.KindCanceled, sandbox.KindUnknownHandler,
	sandbox.KindGuest, KindNoInstance, KindQuarantined, KindPoisonInput, sandbox.KindOther}

// errKindIndex is the index in errKindNames of each name.
var errKindIndex = func() map[string]int {
	m := make(map[string]int, numErrKinds)
	for i, n := range errKindNames {
		m[n] = i
	}
	return m
}()

// errKind is the metric index of err's Kind.
func errKind(err error) int {
	if i, ok := errKindIndex[Kind(err)]; ok {
		return i
	}
	return errOther
}

// latencyBounds are the upper bounds of the call latency histogram, in seconds.
var latencyBounds = [...]float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1, 10}

// stats are a plugin's host-side counters: plain atomics on the call path, turned into
// Prometheus metrics only at scrape time.
type stats struct {
	calls     atomic.Uint64 // calls of ended members
	callsHigh atomic.Uint64 // the most wasmvisor_calls_total has reported
	_         [48]byte
	errs      [numErrKinds]atomic.Uint64
	buckets   [len(latencyBounds) + 1]atomic.Uint64
	sumNanos  atomic.Uint64
	timed     atomic.Uint64

	transitions   [numTransitions]atomic.Uint64
	callerEnded   atomic.Uint64 // instances ended by their caller, replaced uncounted
	budgetEnded   atomic.Uint64 // instances ended at their call timeout or memory limit, replaced uncounted
	poisonRefused atomic.Uint64
	poisonInputs  atomic.Uint64 // inputs that became poison (EventPoisonInput)
}

// calls is the retired members' calls plus the live ones'. A member ending between the two
// reads may be counted twice or not at all in one scrape; the counter never goes backwards
// for long, and is exact when nothing restarts.
func (p *plugin) calls() uint64 {
	n := p.stats.calls.Load()
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil {
			n += m.in().Calls()
		}
	}
	return n
}

// callsSeen is calls, never less than at an earlier scrape: an instance's calls move from
// the live sum to stats.calls when it ends, and a scrape between the two would read fewer.
func (p *plugin) callsSeen() uint64 {
	n := p.calls()
	for {
		old := p.stats.callsHigh.Load()
		if n <= old {
			return old
		}
		if p.stats.callsHigh.CompareAndSwap(old, n) {
			return n
		}
	}
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
	descCalls         = prometheus.NewDesc("wasmvisor_calls_total", "Calls that reached an instance.", []string{"plugin"}, nil)
	descErrors        = prometheus.NewDesc("wasmvisor_call_errors_total", "Failed calls, by kind.", []string{"plugin", "kind"}, nil)
	descLatency       = prometheus.NewDesc("wasmvisor_call_duration_seconds", "Call latency (one call in 2^N: see WithLatencySampling; every call in wasmvisor serve by default).", []string{"plugin"}, nil)
	descResets        = prometheus.NewDesc("wasmvisor_instance_resets_total", "Instances replaced by a fresh one after serving their one operation (instance-per-call isolation), per plugin; not restarts.", []string{"plugin"}, nil)
	descRewinds       = prometheus.NewDesc("wasmvisor_instance_rewinds_total", "Of the instance-per-call resets, those made by setting the instance back in place to its fresh state rather than by a new instance, per plugin.", []string{"plugin"}, nil)
	descRestarts      = prometheus.NewDesc("wasmvisor_restarts_total", "Instances started after the first, per plugin.", []string{"plugin"}, nil)
	descLive          = prometheus.NewDesc("wasmvisor_instances", "Live instances.", []string{"plugin"}, nil)
	descPages         = prometheus.NewDesc("wasmvisor_memory_pages", "Linear memory of an instance, in 64 KiB pages, by pool slot.", []string{"plugin", "slot"}, nil)
	descPending       = prometheus.NewDesc("wasmvisor_bus_pending", "Bus messages buffered for a plugin.", []string{"plugin"}, nil)
	descBus           = prometheus.NewDesc("wasmvisor_bus_messages_total", "Bus messages by outcome.", []string{"outcome"}, nil)
	descState         = prometheus.NewDesc("wasmvisor_plugin_state", "1 for the plugin's current state (running, failed: quarantined, probing), 0 for the others.", []string{"plugin", "state"}, nil)
	descTransitions   = prometheus.NewDesc("wasmvisor_plugin_transitions_total", "Containment transitions: quarantined, probing, recovered, probe_failed.", []string{"plugin", "transition"}, nil)
	descBudgetEnded   = prometheus.NewDesc("wasmvisor_budget_ended_total", "Instances ended by an operation that ran past the plugin's call timeout or hit its memory limit, replaced without counting towards the restart intensity; included in wasmvisor_restarts_total.", []string{"plugin"}, nil)
	descCallerEnded   = prometheus.NewDesc("wasmvisor_caller_ended_total", "Instances ended by their caller (cancelled, or past the caller's deadline), replaced without counting towards the restart intensity; included in wasmvisor_restarts_total.", []string{"plugin"}, nil)
	descPoisonRef     = prometheus.NewDesc("wasmvisor_poison_refused_total", "Calls refused as poison input, without entering an instance.", []string{"plugin"}, nil)
	descPoisonIn      = prometheus.NewDesc("wasmvisor_poison_inputs_total", "Inputs that became poison (one EventPoisonInput each).", []string{"plugin"}, nil)
	descPoisonEvict   = prometheus.NewDesc("wasmvisor_poison_evictions_total", "Poison-table entries evicted at capacity.", nil, nil)
	descPoisonLen     = prometheus.NewDesc("wasmvisor_poison_entries", "Inputs the poison table tracks.", nil, nil)
	descGuest         = prometheus.NewDesc("wasmvisor_guest_metric_total", "A guest's own counter, summed over the plugin's instances, ended ones included: it never goes down.", []string{"plugin", "metric"}, nil)
	descGuestSlot     = prometheus.NewDesc("wasmvisor_guest_slot_metric_total", "A guest's own counter, read from the memory of the instance in a pool slot: it restarts from the guest's initial value with each new instance (wasmvisor_guest_metric_total does not).", []string{"plugin", "slot", "metric"}, nil)
	descGuestSlotHist = prometheus.NewDesc("wasmvisor_guest_slot_observations", "A guest's own histogram, read from the memory of the instance in a pool slot.", []string{"plugin", "slot", "metric"}, nil)
	descGuestG        = prometheus.NewDesc("wasmvisor_guest_value", "A guest's own gauge, read from the memory of the instance in a pool slot.", []string{"plugin", "slot", "metric"}, nil)
	descGuestHist     = prometheus.NewDesc("wasmvisor_guest_observations", "A guest's own histogram, summed over the plugin's instances, ended ones included.", []string{"plugin", "metric"}, nil)
)

// collector reads the host's counters and every free instance's telemetry at scrape time.
type collector struct{ h *Host }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descErrors, descLatency, descRestarts, descResets, descRewinds, descLive,
		descPages, descPending, descBus, descGuest, descGuestG, descGuestHist, descGuestSlot, descGuestSlotHist, descState, descTransitions,
		descCallerEnded, descBudgetEnded, descPoisonRef, descPoisonIn, descPoisonEvict, descPoisonLen,
		descStoreViolations, descSeriesDropped, descSumsDropped, descRecordsSkipped, descOutBytes, descOutRecords, descHostPanics} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	b := &h.bus
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.delivered.Load()), "delivered")
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.dropped.Load()), "dropped")
	ch <- prometheus.MustNewConstMetric(descBus, prometheus.CounterValue, float64(b.failed.Load()), "failed")
	ch <- prometheus.MustNewConstMetric(descPoisonEvict, prometheus.CounterValue, float64(h.poison.evictions.Load()))
	ch <- prometheus.MustNewConstMetric(descPoisonLen, prometheus.GaugeValue, float64(h.poison.entries()))
	ps := h.snapshot()
	rb := h.newReadBudget(ps)
	for _, p := range ps {
		s := &p.stats
		state := PluginRunning
		if c := p.contain.Load(); c != nil {
			state = c.state
		}
		for _, st := range []PluginState{PluginRunning, PluginFailed, PluginProbing} {
			v := 0.0
			if st == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, p.name, st.String())
		}
		for tr := range s.transitions {
			ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(s.transitions[tr].Load()), p.name, transitionNames[tr])
		}
		ch <- prometheus.MustNewConstMetric(descCallerEnded, prometheus.CounterValue, float64(s.callerEnded.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descBudgetEnded, prometheus.CounterValue, float64(s.budgetEnded.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descPoisonRef, prometheus.CounterValue, float64(s.poisonRefused.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descPoisonIn, prometheus.CounterValue, float64(s.poisonInputs.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descCalls, prometheus.CounterValue, float64(p.callsSeen()), p.name)
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
		ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(p.resets.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descRewinds, prometheus.CounterValue, float64(p.rewinds.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(p.live.Load()), p.name)
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(p.pending.Load()), p.name)
		collectOutput(ch, p)
		c.collectGuest(ch, p, rb, slotLabels(len(p.slots)))
	}
}

// slotLabels are the slot labels of n slots.
func slotLabels(n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}

func zapPlugin(name string) zap.Field { return zap.String("plugin", name) }
