package host

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// The host reads every instance's stores (telemetry, events, applied config) straight from
// guest memory, at each scrape of Metrics and each listing (Plugins, Plugin). Everything
// there is the guest's to forge, so every read runs on a budget, a malformed store is a
// typed violation that never ends the instance, and the series a guest's metrics add to the
// registry are capped. See RATIONALE.md, "Hostile stores".

// Defaults of WithReadBudget and WithGuestSeriesLimits.
const (
	// DefaultReadBudgetBytes bounds what one scrape or one listing copies out of all
	// instances' memory together: 16 instances' worth of the largest telemetry the ABI
	// allows, or 32 MiB of events.
	DefaultReadBudgetBytes = 32 << 20
	// DefaultReadBudgetRecords bounds the records (events, metrics, config entries) one
	// scrape or listing returns, across all instances.
	DefaultReadBudgetRecords = 1 << 16
	// DefaultGuestSeriesPerInstance caps the series one pool slot's guest metrics add.
	DefaultGuestSeriesPerInstance = 1000
	// DefaultGuestSeriesPerPlugin caps the series a plugin's guest metrics add, all slots
	// together.
	DefaultGuestSeriesPerPlugin = 4000
)

// The stores, as bits of member.badMem.
const (
	storeTelemetry uint32 = 1 << iota
	storeEvents
	storeConfig
)

// readBudget is one scrape's or one listing's budget, shared by the instances it reads: each
// gets an even share of what is left when its turn comes, so an instance that uses little
// leaves more to the ones after it, and none can starve the others.
type readBudget struct {
	left    sandbox.Budget
	members int // instances still to read (an estimate: members come and go)
}

func (h *Host) newReadBudget(ps []*plugin) *readBudget {
	n := 0
	for _, p := range ps {
		n += int(p.live.Load())
	}
	return &readBudget{left: h.opts.readBudget, members: n}
}

// share returns the next instance's part of the budget.
func (rb *readBudget) share() *sandbox.Budget {
	n := max(rb.members, 1)
	rb.members--
	return &sandbox.Budget{Bytes: rb.left.Bytes / n, Records: rb.left.Records / n}
}

// settle takes what the reads used from b, a share that started as start, from the budget.
func (rb *readBudget) settle(start sandbox.Budget, b *sandbox.Budget) {
	rb.left.Bytes -= start.Bytes - b.Bytes
	rb.left.Records -= start.Records - b.Records
}

// readStore runs one store read of m (read returns its error) and then does what follows any
// operation on m (see after). A read takes the instance as a call does, so the callers,
// config pushes and deliveries that found it busy meanwhile are handed on when it returns,
// and a member the supervisor asked to stop during the read is ended (as it asked: not a
// crash). A read never ends a healthy instance, and a malformed store does not end it either:
// the violation is counted and reported once per store and instance (EventStoreViolation),
// and the instance keeps serving calls (its later reads of that store return the same error).
func (p *plugin) readStore(m *member, store uint32, read func() error) error {
	err := read()
	if err != nil && p.notEntered(m, err) {
		return err // busy: skipped this time; or ended, and notEntered ended the member
	}
	var v *sandbox.ViolationError
	if errors.As(err, &v) && m.badMem.Or(store)&store == 0 {
		p.series.violations.Add(1)
		p.h.emit(Event{Kind: EventStoreViolation, Plugin: p.name, Instance: m.idx, Incarnation: m.inc,
			Err: fmt.Errorf("plugin %q: instance %d: store read: %w", p.name, m.idx, err)})
	}
	p.after(m, err)
	return err
}

type seriesLimits struct{ perInstance, perPlugin int }

// guestSeries is what a plugin's guest metrics have exposed: every series that got a place
// under the caps keeps it for the plugin's life, so that the series a plugin can ever add
// are bounded, however its guest names its metrics. It also holds the plugin's store
// counters, and what has been reported.
type guestSeries struct {
	violations atomic.Uint64 // stores found malformed (once per store and instance)
	dropped    atomic.Uint64 // series left out of scrapes by the caps
	skipped    atomic.Uint64 // records left out of scrapes and listings by the read budget

	mu      sync.Mutex
	placed  map[seriesKey]int // series per slot and metric name
	perSlot []int
	total   int
	sums    int // series of the per-plugin sums
	// Whether the last scrape dropped series, and whether the last scrape and the last
	// listing skipped records: EventTelemetryDropped reports the transitions.
	capped, scrapeShort, listShort bool
}

type seriesKey struct {
	slot int
	name string
}

// seriesOf is the number of Prometheus series a metric is: a histogram has one per bucket,
// +Inf, a sum and a count.
func seriesOf(t *sandbox.Metric) int {
	if t.Kind == abi.Histogram {
		return len(t.Bounds) + 3
	}
	return 1
}

// admit reports whether the metric may be exposed for slot, giving it a place if it fits.
// The caller holds mu.
func (g *guestSeries) admit(lim seriesLimits, slots, slot int, t *sandbox.Metric) bool {
	if g.placed == nil {
		g.placed, g.perSlot = map[seriesKey]int{}, make([]int, slots)
	}
	k := seriesKey{slot, t.Name}
	need := seriesOf(t) - g.placed[k]
	if need <= 0 {
		return true
	}
	if slot >= len(g.perSlot) || g.perSlot[slot]+need > lim.perInstance || g.total+need > lim.perPlugin {
		return false
	}
	g.placed[k] += need
	g.perSlot[slot] += need
	g.total += need
	return true
}

// admitSum is admit for a metric summed over the plugin's instances: the sums have a
// per-plugin cap of their own, as many series as the slots together. The caller holds mu.
func (g *guestSeries) admitSum(lim seriesLimits, t *sandbox.Metric) bool {
	if g.placed == nil {
		g.placed = map[seriesKey]int{}
	}
	k := seriesKey{-1, t.Name}
	need := seriesOf(t) - g.placed[k]
	if need <= 0 {
		return true
	}
	if g.sums+need > lim.perPlugin {
		return false
	}
	g.placed[k] += need
	g.sums += need
	return true
}

// lost records whether the last scrape or listing lost telemetry (flag says which) and
// reports the transition from none lost.
func (p *plugin) lost(flag *bool, n int, cause func() error) {
	g := &p.series
	g.mu.Lock()
	started := n > 0 && !*flag
	*flag = n > 0
	g.mu.Unlock()
	if started {
		p.h.emit(Event{Kind: EventTelemetryDropped, Plugin: p.name, Err: fmt.Errorf("plugin %q: %w", p.name, cause())})
	}
}

var (
	descStoreViolations = prometheus.NewDesc("wasmvisor_store_violations_total",
		"Guest stores found malformed by a read (once per store and instance); the instance kept serving.", []string{"plugin"}, nil)
	descSeriesDropped = prometheus.NewDesc("wasmvisor_guest_series_dropped_total",
		"Guest metric series left out of scrapes by the series caps (counted at each scrape).", []string{"plugin"}, nil)
	descSumsDropped = prometheus.NewDesc("wasmvisor_guest_sum_dropped_total",
		"Guest counter and histogram readings left out of the per-plugin sums: past 1,024 names, or a metric whose kind or histogram bounds differ from the first seen (a live instance's counted at each scrape).", []string{"plugin"}, nil)
	descRecordsSkipped = prometheus.NewDesc("wasmvisor_store_records_skipped_total",
		"Guest store records left out of scrapes and listings by the read budget.", []string{"plugin"}, nil)
)

// collectGuest sends the guest metrics of every live instance of p, read within rb and capped
// by the series limits, and p's store counters.
func (c collector) collectGuest(ch chan<- prometheus.Metric, p *plugin, rb *readBudget, slotLabels []string) {
	lim := c.h.opts.series
	g := &p.series
	var dropped, skipped int
	var keep []sandbox.Metric
	for i := range p.slots {
		m := p.slots[i].m.Load()
		if m == nil {
			continue // down: skipped in this scrape
		}
		ch <- prometheus.MustNewConstMetric(descPages, prometheus.GaugeValue, float64(m.in().MemoryPages()), p.name, slotLabels[i])
		b := rb.share()
		start := *b
		var tel []sandbox.Metric
		in := m.in()
		err := p.readStore(m, storeTelemetry, func() (err error) {
			tel, err = p.readTelemetry(in, b)
			return err
		})
		rb.settle(start, b)
		skipped += b.Skipped
		if err != nil {
			continue // busy, ended or malformed: skipped in this scrape (a violation is reported)
		}
		keep = keep[:0]
		g.mu.Lock()
		for k := range tel {
			if g.admit(lim, len(p.slots), i, &tel[k]) {
				keep = append(keep, tel[k])
			} else {
				dropped += seriesOf(&tel[k])
			}
		}
		g.mu.Unlock()
		for _, t := range keep {
			ch <- guestMetric(p.name, slotLabels[i], &t)
		}
	}
	tot := p.guest.totals()
	g.mu.Lock()
	keep = keep[:0]
	for k := range tot {
		if g.admitSum(lim, &tot[k]) {
			keep = append(keep, tot[k])
		} else {
			dropped += seriesOf(&tot[k])
		}
	}
	g.mu.Unlock()
	for _, t := range keep {
		ch <- guestSum(p.name, &t)
	}
	g.dropped.Add(uint64(dropped))
	g.skipped.Add(uint64(skipped))
	p.lost(&g.capped, dropped, func() error {
		return fmt.Errorf("%d guest series dropped (caps: %d per instance, %d per plugin): %w", dropped, lim.perInstance, lim.perPlugin, ErrSeriesLimit)
	})
	p.lost(&g.scrapeShort, skipped, func() error {
		return fmt.Errorf("scrape: %d store records skipped: %w", skipped, sandbox.ErrReadBudget)
	})
	ch <- prometheus.MustNewConstMetric(descStoreViolations, prometheus.CounterValue, float64(g.violations.Load()), p.name)
	ch <- prometheus.MustNewConstMetric(descSeriesDropped, prometheus.CounterValue, float64(g.dropped.Load()), p.name)
	ch <- prometheus.MustNewConstMetric(descSumsDropped, prometheus.CounterValue, float64(p.guest.dropped()), p.name)
	ch <- prometheus.MustNewConstMetric(descRecordsSkipped, prometheus.CounterValue, float64(g.skipped.Load()), p.name)
}

// guestMetric is one checked guest metric of the instance in slot as a Prometheus metric.
func guestMetric(plugin, slot string, t *sandbox.Metric) prometheus.Metric {
	switch t.Kind {
	case abi.Histogram:
		n, cum := cumulative(t)
		return prometheus.MustNewConstHistogram(descGuestSlotHist, n, t.Sum, cum, plugin, slot, t.Name)
	case abi.Counter:
		return prometheus.MustNewConstMetric(descGuestSlot, prometheus.CounterValue, t.Value, plugin, slot, t.Name)
	}
	return prometheus.MustNewConstMetric(descGuestG, prometheus.GaugeValue, t.Value, plugin, slot, t.Name)
}

// guestSum is a guest counter or histogram summed over a plugin's instances.
func guestSum(plugin string, t *sandbox.Metric) prometheus.Metric {
	if t.Kind == abi.Histogram {
		n, cum := cumulative(t)
		return prometheus.MustNewConstHistogram(descGuestHist, n, t.Sum, cum, plugin, t.Name)
	}
	return prometheus.MustNewConstMetric(descGuest, prometheus.CounterValue, t.Value, plugin, t.Name)
}

// cumulative is a histogram's count and cumulative buckets.
func cumulative(t *sandbox.Metric) (uint64, map[float64]uint64) {
	cum := make(map[float64]uint64, len(t.Bounds))
	var n uint64
	for j, bound := range t.Bounds {
		n += t.Buckets[j]
		cum[bound] = n
	}
	return t.Count, cum
}
