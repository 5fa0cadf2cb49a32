package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/abi"
)

// The stores are read straight from guest memory, without entering the guest, so they can
// be read from an instance that has failed (post mortem) until it is closed. Everything in
// them is the guest's to forge: every pointer, length and count is checked, every size is
// checked against the read's budget before anything is copied, and a malformed store is a
// *ViolationError. See RATIONALE.md, "Hostile stores".
//
// A violation found by a read poisons that store of that instance: every later read of it
// returns the same error at once, without touching guest memory again. It does not end the
// instance, whose calls do not depend on its stores: a read observes, it never decides an
// instance's fate (a scrape or a listing must not turn into a crash of the call path, and
// must not be counted as one).

// Defaults of one store read: what a single Events, Telemetry or AppliedConfig copies out of
// guest memory at most, whatever budget it is given.
const (
	// DefaultReadBytes bounds the bytes one read copies (event topics and data, metric names,
	// histogram bounds and buckets, the applied config), each record counting
	// ReadRecordOverhead more for the Go value that holds it. It holds the largest telemetry
	// the ABI allows (1,024 metrics of 64 buckets and 64-byte names, about 1.2 MiB).
	DefaultReadBytes = 2 << 20
	// DefaultReadRecords bounds the records (events, metrics, config entries) one read
	// returns. It holds the most metrics the ABI allows (abi.MaxMetrics).
	DefaultReadRecords = abi.MaxMetrics
	// ReadRecordOverhead is what each record returned costs a budget on top of the bytes it
	// copies: about the size of the Go value (Event, Metric, map entry) that holds it.
	ReadRecordOverhead = 128
)

// Budget bounds what store reads copy out of guest memory. A read takes what it copies from
// the budget it is given, never more than DefaultReadBytes and DefaultReadRecords; several
// reads (of one instance or of many: a scrape, a listing) may share one budget, so that
// their total is bounded too. A read that runs out of budget returns what fitted and counts
// what it left out in Skipped: Events stops early (EventLog.Remaining; read on from
// EventLog.Next), Telemetry returns the first metrics, AppliedConfig returns an error
// matching ErrReadBudget. Sizes are checked before anything is copied.
//
// A nil *Budget gives one read the defaults. A Budget is not safe for concurrent use.
type Budget struct {
	// Bytes that may still be copied, each record counting ReadRecordOverhead more.
	Bytes int
	// Records that may still be returned.
	Records int
	// Skipped counts the records that reads left out because the budget ran out.
	Skipped int
}

// allowance is what one read may still use: its part of a Budget.
type allowance struct{ bytes, recs, skipped int }

func (b *Budget) open() allowance {
	a := allowance{bytes: DefaultReadBytes, recs: DefaultReadRecords}
	if b != nil {
		a.bytes, a.recs = min(a.bytes, max(b.Bytes, 0)), min(a.recs, max(b.Records, 0))
	}
	return a
}

// close takes from b what the read used: it started with start and has a left.
func (b *Budget) close(start, a allowance) {
	if b != nil {
		b.Bytes -= start.bytes - a.bytes
		b.Records -= start.recs - a.recs
		b.Skipped += a.skipped
	}
}

// fits reports whether one record of n bytes fits; n is at most a few MiB (checked by the
// caller), so the sum cannot overflow.
func (a *allowance) fits(n int) bool { return a.recs >= 1 && a.bytes >= n+ReadRecordOverhead }

func (a *allowance) charge(n int) { a.recs--; a.bytes -= n + ReadRecordOverhead }

// Event is one entry of the guest's event log.
type Event struct {
	Seq   uint64
	Topic string
	Data  []byte
}

// EventLog is what Events read.
type EventLog struct {
	Events []Event
	// Next is the sequence number to read from next time (pass it as since): the next event
	// the guest will record, or, when the budget ran out, the first event not returned.
	Next uint64
	// Remaining counts the events from Next on that are in the ring but were not returned
	// because the read's budget ran out.
	Remaining uint64
	// Lost counts events between since and the oldest one still in the ring: evicted before
	// they were read (or being rewritten when the guest stopped).
	Lost uint64
	// Dropped is the guest's own count of events it refused.
	Dropped uint64
}

// Metric is one telemetry value read from guest memory.
type Metric struct {
	Name  string
	Kind  abi.MetricKind
	Value float64 // counter or gauge
	// Histogram only: Bounds are the upper bounds (finite, strictly ascending), Buckets the
	// per-bucket counts (one more than Bounds, the last for +Inf; they add up to Count), Count
	// and Sum of the observations.
	Bounds  []float64
	Buckets []uint64
	Count   uint64
	Sum     float64
}

// MarshalJSON encodes the metric in the API's JSON style: snake_case keys (name, kind, value,
// bounds, buckets, count, sum), the kind by its name ("counter", "gauge", "histogram"), and
// bounds and buckets only for a histogram. A value JSON has no number for (a gauge or a sum
// that is NaN or infinite, which the ABI allows) is a string: "NaN", "+Inf", "-Inf".
// encoding/json refuses such numbers, which would fail a whole listing.
func (m Metric) MarshalJSON() ([]byte, error) {
	type plain struct {
		Name    string    `json:"name"`
		Kind    string    `json:"kind"`
		Value   jsonFloat `json:"value"`
		Bounds  []float64 `json:"bounds,omitempty"` // finite: checked by the read
		Buckets []uint64  `json:"buckets,omitempty"`
		Count   uint64    `json:"count"`
		Sum     jsonFloat `json:"sum"`
	}
	return json.Marshal(plain{Name: m.Name, Kind: m.Kind.String(), Value: jsonFloat(m.Value), Bounds: m.Bounds,
		Buckets: m.Buckets, Count: m.Count, Sum: jsonFloat(m.Sum)})
}

type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte(`"` + strconv.FormatFloat(v, 'g', -1, 64) + `"`), nil
	}
	return json.Marshal(v)
}

// The stores, as indices of Instance.storeErr.
const (
	storeEvents = iota
	storeTelemetry
	storeConfig
	numStores
)

// read runs fn on the instance's memory when no call is running: on an idle instance it
// takes the busy state; on a failed one it reads what the instance died with.
//
// A read on a failed instance counts itself in readers and then checks the state again; Close
// moves the state to closed and then waits for readers to drain before it frees (and
// recycles) the memory: one of the two sees the other.
func (i *Instance) read(fn func() error) error {
	if s := i.state.Load(); s&stMask == stFailed {
		i.readers.Add(1)
		defer i.readers.Add(-1)
		if s := i.state.Load(); s&stMask != stFailed {
			return i.unavailable(s)
		}
		return fn()
	}
	id, err := i.enter(context.Background(), opRead)
	if err != nil {
		return err
	}
	defer i.leave(id)
	return fn()
}

// readStore is read for one store: a store found malformed once is poisoned, and later reads
// return the same *ViolationError without reading.
func (i *Instance) readStore(store int, fn func() error) error {
	if v := i.storeErr[store].Load(); v != nil {
		return v
	}
	err := i.read(fn)
	if err != nil { // v escapes to errors.As: made only when there is an error to look into
		var v *ViolationError
		if errors.As(err, &v) {
			i.storeErr[store].CompareAndSwap(nil, v)
		}
	}
	return err
}

func storeViolation(format string, args ...any) error {
	return &ViolationError{Reason: fmt.Sprintf(format, args...)}
}

func (i *Instance) ctrlWord(off uint32) (uint32, error) {
	v, ok := i.mem.ReadUint32Le(i.ctrl + off)
	if !ok {
		return 0, storeViolation("control block out of memory")
	}
	return v, nil
}

// Events returns the events with sequence numbers from since on that are still in the ring,
// within the default budget of one read (see Budget).
func (i *Instance) Events(since uint64) (EventLog, error) { return i.EventsWithin(since, nil) }

// EventsWithin is Events within budget b (nil: the defaults of one read). It returns the
// oldest events first and stops when the next one does not fit: EventLog.Next and Remaining
// say where to read on. An event whose topic and data together exceed abi.MaxEventSize, or
// that lies outside memory, is an ABI violation, found before anything is copied.
func (i *Instance) EventsWithin(since uint64, b *Budget) (EventLog, error) {
	var log EventLog
	start := b.open()
	a := start
	err := i.readStore(storeEvents, func() error { return i.events(since, &a, &log) })
	b.close(start, a)
	if err != nil {
		return EventLog{}, err
	}
	return log, nil
}

func (i *Instance) events(since uint64, a *allowance, log *EventLog) error {
	hdr, err := i.ctrlWord(abi.CtrlEventsPtr)
	if err != nil || hdr == 0 {
		return err
	}
	h, ok := i.mem.Read(hdr, abi.RingSize)
	if !ok {
		return storeViolation("event ring header %#x out of memory", hdr)
	}
	slotsPtr := binary.LittleEndian.Uint32(h[abi.RingSlotsPtr:])
	count := binary.LittleEndian.Uint32(h[abi.RingSlotCount:])
	written := binary.LittleEndian.Uint64(h[abi.RingWritten:])
	log.Dropped = binary.LittleEndian.Uint64(h[abi.RingDropped:])
	log.Next = written
	if count == 0 || count > abi.MaxSlots {
		return storeViolation("event ring has %d slots, want 1 to %d", count, abi.MaxSlots)
	}
	slots, ok := i.mem.Read(slotsPtr, count*abi.SlotSize)
	if !ok {
		return storeViolation("event ring slots %#x+%d out of memory (%d bytes)", slotsPtr, count*abi.SlotSize, i.mem.Size())
	}
	oldest := uint64(0)
	if written > uint64(count) {
		oldest = written - uint64(count)
	}
	if since < oldest {
		log.Lost = oldest - since
		since = oldest
	}
	for s := since; s < written; s++ {
		slot := slots[uint32(s%uint64(count))*abi.SlotSize:]
		if binary.LittleEndian.Uint64(slot[abi.SlotSeq:]) != s {
			log.Lost++ // being rewritten when the guest stopped
			continue
		}
		tp, tn := binary.LittleEndian.Uint32(slot[abi.SlotTopicPtr:]), binary.LittleEndian.Uint32(slot[abi.SlotTopicLen:])
		dp, dn := binary.LittleEndian.Uint32(slot[abi.SlotDataPtr:]), binary.LittleEndian.Uint32(slot[abi.SlotDataLen:])
		if size := uint64(tn) + uint64(dn); size > abi.MaxEventSize {
			return storeViolation("event %d: topic and data of %d bytes, at most %d", s, size, abi.MaxEventSize)
		}
		topic, err := i.view(tp, tn, "event topic")
		if err != nil {
			return storeViolation("event %d: %v", s, err)
		}
		data, err := i.view(dp, dn, "event data")
		if err != nil {
			return storeViolation("event %d: %v", s, err)
		}
		n := int(tn) + int(dn)
		if !a.fits(n) {
			log.Next, log.Remaining = s, written-s
			a.skipped += int(min(written-s, math.MaxInt32))
			return nil
		}
		a.charge(n)
		log.Events = append(log.Events, Event{Seq: s, Topic: string(topic), Data: bytes.Clone(data)})
	}
	return nil
}

// Telemetry returns a snapshot of the guest's metrics, within the default budget of one read,
// which holds the largest telemetry the ABI allows.
func (i *Instance) Telemetry() ([]Metric, error) { return i.TelemetryWithin(nil) }

// TelemetryWithin is Telemetry within budget b (nil: the defaults of one read). Every record
// is checked first, without copying: names valid ([a-zA-Z_][a-zA-Z0-9_]{0,63}) and unique,
// a known kind, at most abi.MaxBuckets buckets (none but for a histogram), bounds finite and
// strictly ascending, buckets adding up to the observation count, everything inside memory;
// a record that breaks a rule is an ABI violation. Then the metrics are copied in the
// guest's order while they fit in b; the rest are counted in b.Skipped.
func (i *Instance) TelemetryWithin(b *Budget) ([]Metric, error) {
	var out []Metric
	start := b.open()
	a := start
	err := i.readStore(storeTelemetry, func() (err error) {
		out, err = i.telemetry(&a)
		return err
	})
	b.close(start, a)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// record is one metric record, checked, still in guest memory.
type record struct {
	name, bounds, buckets []byte
	kind                  abi.MetricKind
	value, sum            uint64
}

func (r *record) size() int { return len(r.name) + len(r.bounds) + len(r.buckets) }

func (i *Instance) telemetry(a *allowance) ([]Metric, error) {
	ptr, err := i.ctrlWord(abi.CtrlMetricsPtr)
	if err != nil {
		return nil, err
	}
	n, err := i.ctrlWord(abi.CtrlMetricsCount)
	if err != nil {
		return nil, err
	}
	if n > abi.MaxMetrics {
		return nil, storeViolation("%d metrics, at most %d", n, abi.MaxMetrics)
	}
	if n == 0 {
		return nil, nil
	}
	recs, ok := i.mem.Read(ptr, n*abi.MetricSize)
	if !ok {
		return nil, storeViolation("metric records %#x+%d out of memory (%d bytes)", ptr, n*abi.MetricSize, i.mem.Size())
	}
	// Checked first, all of them, in place: the scratch is n small headers (at most 1,024).
	sc := takeRecordScratch(int(n))
	defer sc.give()
	checked, order := sc.recs, sc.order
	for k := range checked {
		if err := i.checkRecord(recs[k*abi.MetricSize:(k+1)*abi.MetricSize], &checked[k]); err != nil {
			return nil, storeViolation("metric %d: %v", k, err)
		}
	}
	for k := range order {
		order[k] = uint16(k)
	}
	slices.SortFunc(order, func(x, y uint16) int { return bytes.Compare(checked[x].name, checked[y].name) })
	for k := 1; k < len(order); k++ {
		if bytes.Equal(checked[order[k-1]].name, checked[order[k]].name) {
			return nil, storeViolation("metric name %q listed twice (records %d and %d)", checked[order[k]].name,
				min(order[k-1], order[k]), max(order[k-1], order[k]))
		}
	}
	// Then copied, in the guest's order, while they fit.
	out := make([]Metric, 0, min(int(n), a.recs))
	for k := range checked {
		r := &checked[k]
		if !a.fits(r.size()) {
			a.skipped += len(checked) - k
			break
		}
		a.charge(r.size())
		out = append(out, r.metric(i.mod.names.intern(r.name)))
	}
	return out, nil
}

// checkRecord checks one 48-byte metric record and fills r with views of guest memory.
func (i *Instance) checkRecord(raw []byte, r *record) error {
	np, nn := binary.LittleEndian.Uint32(raw[abi.MetricNamePtr:]), binary.LittleEndian.Uint32(raw[abi.MetricNameLen:])
	if nn == 0 || nn > abi.MaxMetricName {
		return fmt.Errorf("name of %d bytes, want 1 to %d", nn, abi.MaxMetricName)
	}
	name, err := i.view(np, nn, "name")
	if err != nil {
		return err
	}
	if !abi.ValidMetricName(string(name)) {
		return fmt.Errorf("invalid name %q", name)
	}
	r.name = name
	r.kind = abi.MetricKind(binary.LittleEndian.Uint32(raw[abi.MetricKindOff:]))
	r.value = binary.LittleEndian.Uint64(raw[abi.MetricValue:])
	r.sum = binary.LittleEndian.Uint64(raw[abi.MetricSum:])
	nb := binary.LittleEndian.Uint32(raw[abi.MetricBucketCount:])
	switch r.kind {
	case abi.Counter, abi.Gauge:
		if nb != 0 {
			return fmt.Errorf("%q: a %s with %d buckets, want 0", name, r.kind, nb)
		}
		return nil
	case abi.Histogram:
	default:
		return fmt.Errorf("%q: unknown kind %d", name, uint32(r.kind))
	}
	if nb > abi.MaxBuckets {
		return fmt.Errorf("%q: %d buckets, at most %d", name, nb, abi.MaxBuckets)
	}
	if r.bounds, err = i.view(binary.LittleEndian.Uint32(raw[abi.MetricBoundsPtr:]), nb*8, "histogram bounds"); err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	if r.buckets, err = i.view(binary.LittleEndian.Uint32(raw[abi.MetricBucketsPtr:]), (nb+1)*8, "histogram buckets"); err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	prev := math.Inf(-1)
	for b := 0; b < int(nb); b++ {
		v := math.Float64frombits(binary.LittleEndian.Uint64(r.bounds[b*8:]))
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%q: bound %d is %v, want a finite number", name, b, v)
		}
		if v <= prev {
			return fmt.Errorf("%q: bounds not strictly ascending: bound %d is %v after %v", name, b, v, prev)
		}
		prev = v
	}
	var total uint64 // wraps at 2^64 as the guest's count does
	for b := 0; b <= int(nb); b++ {
		total += binary.LittleEndian.Uint64(r.buckets[b*8:])
	}
	if total != r.value {
		return fmt.Errorf("%q: buckets add up to %d, the observation count is %d", name, total, r.value)
	}
	return nil
}

// metric copies a checked record out of guest memory.
// metric is the record as a Metric named name (the record's name, interned).
func (r *record) metric(name string) Metric {
	m := Metric{Name: name, Kind: r.kind}
	switch r.kind {
	case abi.Counter:
		m.Value = float64(r.value)
	case abi.Gauge:
		m.Value = math.Float64frombits(r.value)
	case abi.Histogram:
		m.Count, m.Sum = r.value, math.Float64frombits(r.sum)
		m.Bounds = make([]float64, len(r.bounds)/8)
		m.Buckets = make([]uint64, len(r.buckets)/8)
		for b := range m.Bounds {
			m.Bounds[b] = math.Float64frombits(binary.LittleEndian.Uint64(r.bounds[b*8:]))
		}
		for b := range m.Buckets {
			m.Buckets[b] = binary.LittleEndian.Uint64(r.buckets[b*8:])
		}
	}
	return m
}

// AppliedConfig returns the config the guest holds, as it reports it in its control block,
// within the default budget of one read.
func (i *Instance) AppliedConfig() (map[string]string, error) { return i.AppliedConfigWithin(nil) }

// AppliedConfigWithin is AppliedConfig within budget b (nil: the defaults of one read). A
// config that is out of memory or malformed is an ABI violation; one that does not fit in b
// (its bytes, and one record per entry) is not read: the error matches ErrReadBudget and
// b.Skipped counts it.
func (i *Instance) AppliedConfigWithin(b *Budget) (map[string]string, error) {
	var cfg map[string]string
	start := b.open()
	a := start
	err := i.readStore(storeConfig, func() (err error) {
		cfg, err = i.appliedConfig(&a)
		return err
	})
	b.close(start, a)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func (i *Instance) appliedConfig(a *allowance) (map[string]string, error) {
	ptr, err := i.ctrlWord(abi.CtrlConfigPtr)
	if err != nil {
		return nil, err
	}
	n, err := i.ctrlWord(abi.CtrlConfigLen)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return map[string]string{}, nil
	}
	b, err := i.view(ptr, n, "applied config")
	if err != nil {
		return nil, storeViolation("%v", err)
	}
	entries := 0
	if err := abi.WalkConfig(b, func(_, _ []byte) { entries++ }); err != nil {
		return nil, storeViolation("applied config: %v", err)
	}
	// The entries are charged as records, the bytes once (the encoding holds the keys and
	// values plus 8 bytes of lengths per entry, so it bounds what the map copies).
	if entries > a.recs || int(n)+entries*ReadRecordOverhead > a.bytes {
		a.skipped++
		return nil, fmt.Errorf("applied config of %d entries, %d bytes: %w", entries, n, ErrReadBudget)
	}
	a.recs -= entries
	a.bytes -= int(n) + entries*ReadRecordOverhead
	return abi.DecodeConfig(b)
}

// recordScratch is telemetry's scratch: the checked records' headers and their sorted order,
// reused across reads. An array of them on the stack, tried first, made telemetry's frame
// outgrow a new goroutine's first stack, and an InstancePerCall reset (a goroutine of its
// own, which reads the instance's telemetry) then copied its stack at every reset: 1.2 µs
// more a call on BenchmarkInstancePerCall/echo-per-call, dearer than the two allocations the
// array saved. A pool keeps both the allocations and the stack small.
type recordScratch struct {
	recs  []record
	order []uint16
}

// maxPooledRecords is the most records a scratch kept in the pool holds: one a guest with
// abi.MaxMetrics metrics used is left to the collector.
const maxPooledRecords = 64

var recordScratches = sync.Pool{New: func() any { return new(recordScratch) }}

// takeRecordScratch returns a scratch of n records, zeroed, and order of n.
func takeRecordScratch(n int) *recordScratch {
	sc := recordScratches.Get().(*recordScratch)
	if cap(sc.recs) < n {
		sc.recs, sc.order = make([]record, n), make([]uint16, n)
	}
	sc.recs, sc.order = sc.recs[:n], sc.order[:n]
	return sc
}

// give returns sc to the pool, holding no view of guest memory.
func (sc *recordScratch) give() {
	if cap(sc.recs) > maxPooledRecords {
		return
	}
	clear(sc.recs)
	recordScratches.Put(sc)
}

// maxInterned is how many metric names a Module interns (metricNames).
const maxInterned = 64

// metricNames interns the metric names a module's instances report. Every read of an
// instance's telemetry made each name anew, and a restart (its final read) and an
// InstancePerCall reset read it every time. Reads take the names from an immutable map
// behind an atomic pointer, so instances of one module read in parallel without a lock; a
// new name copies the map under mu. At most maxInterned names: a guest that makes up new
// names past them gets them allocated at each read, as before, and cannot grow the table.
type metricNames struct {
	m  atomic.Pointer[map[string]string]
	mu sync.Mutex
}

// intern returns b as a string, the same string for the same bytes while the table has room.
func (c *metricNames) intern(b []byte) string {
	if p := c.m.Load(); p != nil {
		if s, ok := (*p)[string(b)]; ok { // the conversion in an index allocates nothing
			return s
		}
	}
	s := string(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[string]string
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if _, ok := old[s]; !ok && len(old) < maxInterned {
		n := make(map[string]string, len(old)+1)
		maps.Copy(n, old)
		n[s] = s
		c.m.Store(&n)
	}
	return s
}
