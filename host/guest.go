package host

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// A plugin's guest telemetry and guest events outlive its instances: each instance's stores
// live in its own memory and die with it, so the host folds what an instance leaves into
// per-plugin state before closing it (a final post-mortem read, within the default budget of
// one read). Counters and histograms are served summed per plugin (GuestTotals,
// wasmvisor_guest_metric_total and wasmvisor_guest_observations), cumulative across instances
// and incarnations; events go into a per-plugin log with a sequence number of its own that
// increases across instances (GuestEvents). See RATIONALE.md, "Guest telemetry across
// restarts".

// Bounds of a plugin's guest event log.
const (
	// GuestEventLogSize is the number of events a plugin's log holds: older ones are evicted
	// (and counted in GuestEventLog.Lost by a reader that asked for them).
	GuestEventLogSize = 1024
	// GuestEventLogBytes bounds the topics and data a plugin's log holds together.
	GuestEventLogBytes = 1 << 20
	// MaxGuestEventsRead is the most events one GuestEvents answer returns.
	MaxGuestEventsRead = 1024
)

// GuestEvent is one event a plugin's guest recorded through the ABI's event import.
type GuestEvent struct {
	// Seq is the plugin's sequence number: 0 for the first event the host collected from any
	// of the plugin's instances, and one more for each next one, across instances, restarts
	// and replacements. Pass Next of an answer as since to read on.
	Seq uint64
	// Instance and Incarnation name the instance that recorded it, GuestSeq its number in
	// that instance's own ring.
	Instance    int
	Incarnation uint64
	GuestSeq    uint64
	Topic       string
	Data        []byte
}

// GuestEventLog is what GuestEvents returns.
type GuestEventLog struct {
	// Events are the events from since on, oldest first, at most the limit asked.
	Events []GuestEvent
	// Next is the sequence number to pass as since to read on.
	Next uint64
	// Lost counts the events from since on that the log evicted before this read.
	Lost uint64
	// GuestLost counts, over the plugin's life, the events that left the instances' own rings
	// before the host collected them (the ring wrapped, or the instance died mid-record).
	GuestLost uint64
}

// guestState is a plugin's guest telemetry and events carried across instances. Reads of
// instances that feed it hold mu from the read to the update, so two readers of one
// instance never both take the same events. An instance is folded after its Close: an
// update that comes later finds it closed (Err) and is dropped.
type guestState struct {
	mu sync.Mutex

	// Telemetry: the counters and histograms of ended instances, summed, and the last
	// values read from each live instance (each never lower than the one before it).
	folded      map[string]*sandbox.Metric
	last        map[instance]map[string]sandbox.Metric
	spareLast   []map[string]sandbox.Metric // of folded instances, cleared, for the next ones (at most maxSpareLast)
	totalsDrops uint64                      // contributions left out: past abi.MaxMetrics names, or histogram bounds that differ

	// Events: a ring of the last GuestEventLogSize events, and each live instance's cursor
	// in its own ring.
	events    []GuestEvent
	evBytes   int
	next      uint64
	cursor    map[instance]uint64
	guestLost uint64
}

func closed(in instance) bool { return errors.Is(in.Err(), sandbox.ErrClosed) }

// observe merges a read of in's telemetry into its last values. The caller holds mu.
func (g *guestState) observe(in instance, tel []sandbox.Metric) {
	if closed(in) {
		return
	}
	if g.last == nil {
		g.last = map[instance]map[string]sandbox.Metric{}
	}
	l := g.last[in]
	if l == nil {
		if k := len(g.spareLast); k > 0 {
			l, g.spareLast = g.spareLast[k-1], g.spareLast[:k-1]
		} else {
			l = map[string]sandbox.Metric{}
		}
		g.last[in] = l
	}
	for _, t := range tel {
		if t.Kind == abi.Gauge {
			continue
		}
		old, ok := l[t.Name]
		switch {
		case !ok, old.Kind != t.Kind:
			if !ok && len(l) >= abi.MaxMetrics {
				g.totalsDrops++
				continue
			}
		case t.Kind == abi.Counter && t.Value < old.Value, t.Kind == abi.Histogram && t.Count < old.Count:
			continue // a guest counter never goes down in the sums
		}
		l[t.Name] = t
	}
}

// fold moves a closed instance's last values into the plugin's sums, and forgets its event
// cursor.
func (g *guestState) fold(in instance) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.foldLocked(in)
}

// foldLocked is fold for a caller that holds mu; also for an instance rewound in place (see
// plugin.rewind), which is a new instance as far as its stores go.
func (g *guestState) foldLocked(in instance) {
	l, ok := g.last[in]
	for _, t := range l {
		g.add(g.foldedMap(), &t)
	}
	if ok {
		delete(g.last, in)
		if len(g.spareLast) < maxSpareLast && len(l) <= maxSpareMetrics {
			clear(l)
			g.spareLast = append(g.spareLast, l)
		}
	}
	delete(g.cursor, in)
}

// A folded instance's map of last values is kept, cleared, for an instance that starts after
// it (a restart's successor, an InstancePerCall reset): at most maxSpareLast of them, and only
// maps of at most maxSpareMetrics names, so that a guest that once listed a thousand metrics
// leaves no thousand-entry map behind.
const (
	maxSpareLast    = 4
	maxSpareMetrics = 64
)

func (g *guestState) foldedMap() map[string]*sandbox.Metric {
	if g.folded == nil {
		g.folded = map[string]*sandbox.Metric{}
	}
	return g.folded
}

// add adds t to the sums in dst, copying what it keeps.
func (g *guestState) add(dst map[string]*sandbox.Metric, t *sandbox.Metric) {
	s := dst[t.Name]
	if s == nil {
		if len(dst) >= abi.MaxMetrics {
			g.totalsDrops++
			return
		}
		c := *t
		c.Bounds, c.Buckets = slices.Clone(t.Bounds), slices.Clone(t.Buckets)
		dst[t.Name] = &c
		return
	}
	if s.Kind != t.Kind || !slices.Equal(s.Bounds, t.Bounds) {
		g.totalsDrops++ // a replacement changed the metric's kind or bounds: the first one stays
		return
	}
	s.Value += t.Value
	s.Count += t.Count
	s.Sum += t.Sum
	for i := range s.Buckets {
		s.Buckets[i] += t.Buckets[i]
	}
}

// dropped is totalsDrops.
func (g *guestState) dropped() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.totalsDrops
}

// totals returns the plugin's guest counters and histograms summed over its ended and live
// instances, sorted by name.
func (g *guestState) totals() []sandbox.Metric {
	g.mu.Lock()
	defer g.mu.Unlock()
	sum := make(map[string]*sandbox.Metric, len(g.folded))
	for _, t := range g.folded {
		g.add(sum, t)
	}
	for _, l := range g.last {
		for _, t := range l {
			g.add(sum, &t)
		}
	}
	out := make([]sandbox.Metric, 0, len(sum))
	for _, t := range sum {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b sandbox.Metric) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// appendEvents adds what a read of m's instance in returned to the log. The caller holds mu.
func (g *guestState) appendEvents(m *member, in instance, log sandbox.EventLog) {
	if closed(in) {
		return
	}
	if g.cursor == nil {
		g.cursor = map[instance]uint64{}
	}
	g.cursor[in] = log.Next
	g.guestLost += log.Lost
	for _, e := range log.Events {
		g.events = append(g.events, GuestEvent{Seq: g.next, Instance: m.idx, Incarnation: m.inc, GuestSeq: e.Seq, Topic: e.Topic, Data: e.Data})
		g.evBytes += len(e.Topic) + len(e.Data)
		g.next++
	}
	drop := 0
	for drop < len(g.events) && (len(g.events)-drop > GuestEventLogSize || g.evBytes > GuestEventLogBytes) {
		g.evBytes -= len(g.events[drop].Topic) + len(g.events[drop].Data)
		drop++
	}
	if drop > 0 {
		g.events = slices.Delete(g.events, 0, drop)
	}
}

// readEvents reads the events in has recorded since the host last collected from it, within
// b, into the log.
func (p *plugin) readEvents(m *member, in instance, b *sandbox.Budget) error {
	g := &p.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	log, err := in.EventsWithin(g.cursor[in], b)
	if err != nil {
		return err
	}
	g.appendEvents(m, in, log)
	return nil
}

// readTelemetry reads in's telemetry within b and merges its counters and histograms into
// the plugin's sums.
func (p *plugin) readTelemetry(in instance, b *sandbox.Budget) ([]sandbox.Metric, error) {
	g := &p.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	tel, err := in.TelemetryWithin(b)
	if err == nil {
		g.observe(in, tel)
	}
	return tel, err
}

// lastRead takes what an instance that is about to be closed leaves: its events and telemetry,
// read post mortem within the defaults of one read. After its Close, fold carries it over.
func (p *plugin) lastRead(m *member, in instance) {
	_ = p.readEvents(m, in, nil)
	_, _ = p.readTelemetry(in, nil)
}

// closeInstance is the end of an instance: the last read, Close, and the fold.
func (p *plugin) closeInstance(m *member, in instance) {
	p.lastRead(m, in)
	_ = in.Close(context.Background()) // its last operation has returned
	p.guest.fold(in)
}

// GuestEvents returns up to limit (at most MaxGuestEventsRead; 0 or less: that many) of
// plugin name's guest events with sequence numbers from since on, oldest first. It first
// collects the new events of every live instance that is free (one that is busy is collected
// by a later read, or when it ends), within the host's read budget. Events of an instance that
// ends are collected before it is closed. It returns an error matching ErrNotFound for an
// unknown plugin. Safe for concurrent use.
func (h *Host) GuestEvents(name string, since uint64, limit int) (GuestEventLog, error) {
	p, err := h.lookup(name)
	if err != nil {
		return GuestEventLog{}, err
	}
	rb := h.newReadBudget([]*plugin{p})
	for i := range p.slots {
		m := p.slots[i].m.Load()
		if m == nil {
			continue
		}
		in := m.in()
		b := rb.share()
		start := *b
		_ = p.readStore(m, storeEvents, func() error { return p.readEvents(m, in, b) })
		rb.settle(start, b)
	}
	if limit <= 0 || limit > MaxGuestEventsRead {
		limit = MaxGuestEventsRead
	}
	g := &p.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	out := GuestEventLog{Next: g.next, GuestLost: g.guestLost}
	oldest := g.next - uint64(len(g.events))
	if since < oldest {
		out.Lost, since = oldest-since, oldest
	}
	if since >= g.next {
		return out, nil
	}
	evs := g.events[since-oldest:]
	if len(evs) > limit {
		evs = evs[:limit]
	}
	out.Events = slices.Clone(evs)
	out.Next = since + uint64(len(evs))
	return out, nil
}

// GuestTotals returns plugin name's guest counters and histograms summed over every
// instance it has had: the last values read from each ended instance (post mortem, before its
// Close) plus the latest read of each live one (at a scrape of Metrics, or now for a free
// instance). A counter's sum never goes down. Gauges are not summed. An unknown plugin is an
// error matching ErrNotFound.
func (h *Host) GuestTotals(name string) ([]sandbox.Metric, error) {
	p, err := h.lookup(name)
	if err != nil {
		return nil, err
	}
	rb := h.newReadBudget([]*plugin{p})
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil {
			in := m.in()
			b := rb.share()
			start := *b
			_ = p.readStore(m, storeTelemetry, func() error { _, err := p.readTelemetry(in, b); return err })
			rb.settle(start, b)
		}
	}
	return p.guest.totals(), nil
}
