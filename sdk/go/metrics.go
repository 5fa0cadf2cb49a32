package sdk

import (
	"fmt"
	"math"

	"github.com/wasmvisor/wasmvisor/abi"
)

// metricSet is the array of 48-byte metric records in guest memory (metrics_ptr,
// metrics_count) and the Go storage the records point into.
type metricSet struct {
	recs []byte    // len(list) records; its capacity holds more before it must move
	list []*metric // declaration order; keeps names, bounds and buckets referenced
}

type metric struct {
	g       *guest
	idx     int
	name    []byte
	bounds  []float64
	boundsB []byte // bounds as n × f64, little-endian
	buckets []byte // (n+1) × u64, little-endian
}

// rec returns the metric's record in the current array (the array moves when it grows).
func (m *metric) rec() []byte {
	off := m.idx * abi.MetricSize
	return m.g.metrics.recs[off : off+abi.MetricSize]
}

func (g *guest) declare(name string, kind abi.MetricKind, bounds []float64) *metric {
	fn := map[abi.MetricKind]string{abi.Counter: "NewCounter", abi.Gauge: "NewGauge", abi.Histogram: "NewHistogram"}[kind]
	if !abi.ValidMetricName(name) {
		panic(fmt.Sprintf("sdk: %s(%q): a metric name must match [a-zA-Z_][a-zA-Z0-9_]{0,63}", fn, name))
	}
	for _, m := range g.metrics.list {
		if string(m.name) == name {
			panic(fmt.Sprintf("sdk: %s(%q): duplicate metric name", fn, name))
		}
	}
	if len(g.metrics.list) >= abi.MaxMetrics {
		panic(fmt.Sprintf("sdk: %s(%q): more than %d metrics", fn, name, abi.MaxMetrics))
	}
	if len(bounds) > abi.MaxBuckets {
		panic(fmt.Sprintf("sdk: %s(%q): %d bounds, at most %d", fn, name, len(bounds), abi.MaxBuckets))
	}
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) {
			panic(fmt.Sprintf("sdk: %s(%q): bound %v is not finite", fn, name, b))
		}
		if i > 0 && b <= bounds[i-1] {
			panic(fmt.Sprintf("sdk: %s(%q): bounds not strictly ascending at %v", fn, name, b))
		}
	}

	ms := &g.metrics
	n := len(ms.list)
	if (n+1)*abi.MetricSize > cap(ms.recs) {
		grown := alignedBytes(max(8, 2*n) * abi.MetricSize)
		copy(grown, ms.recs)
		ms.recs = grown[:len(ms.recs)]
	}
	ms.recs = ms.recs[:(n+1)*abi.MetricSize]
	m := &metric{g: g, idx: n, name: []byte(name)}
	ms.list = append(ms.list, m)

	r := m.rec()
	putU32(r, abi.MetricNamePtr, g.p.addr(m.name))
	putU32(r, abi.MetricNameLen, uint32(len(m.name)))
	putU32(r, abi.MetricKindOff, uint32(kind))
	if kind == abi.Histogram {
		m.bounds = append([]float64(nil), bounds...)
		m.boundsB = alignedBytes(8 * len(bounds))
		for i, b := range bounds {
			putU64(m.boundsB, 8*i, math.Float64bits(b))
		}
		m.buckets = alignedBytes(8 * (len(bounds) + 1))
		putU32(r, abi.MetricBucketCount, uint32(len(bounds)))
		putU32(r, abi.MetricBoundsPtr, g.p.addr(m.boundsB))
		putU32(r, abi.MetricBucketsPtr, g.p.addr(m.buckets))
	}
	g.sync()
	return m
}

// Counter is a monotonically increasing u64 in a metric record of kind counter. Its value is in
// guest memory as soon as it changes; the host reads it without calling in.
type Counter struct{ m *metric }

// NewCounter declares a counter. Declare metrics in init(); a declaration after
// wasmvisor_init appends a record and still works. It panics if name does not match
// [a-zA-Z_][a-zA-Z0-9_]{0,63} or is already declared.
func NewCounter(name string) *Counter { return &Counter{m: std.declare(name, abi.Counter, nil)} }

// Add adds n to the counter (wrapping at 2^64).
func (c *Counter) Add(n uint64) {
	r := c.m.rec()
	putU64(r, abi.MetricValue, getU64(r, abi.MetricValue)+n)
}

// Inc adds 1 to the counter.
func (c *Counter) Inc() { c.Add(1) }

// Gauge is an f64 that goes up and down, in a metric record of kind gauge.
type Gauge struct{ m *metric }

// NewGauge declares a gauge, with the same rules as NewCounter.
func NewGauge(name string) *Gauge { return &Gauge{m: std.declare(name, abi.Gauge, nil)} }

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { putU64(g.m.rec(), abi.MetricValue, math.Float64bits(v)) }

// Add adds d (which may be negative) to the gauge.
func (g *Gauge) Add(d float64) {
	r := g.m.rec()
	putU64(r, abi.MetricValue, math.Float64bits(math.Float64frombits(getU64(r, abi.MetricValue))+d))
}

// Histogram counts observations in buckets with fixed upper bounds, in a metric record of kind
// histogram.
type Histogram struct{ m *metric }

// NewHistogram declares a histogram with the given upper bounds (at most 64, finite, strictly
// ascending; a last +Inf bucket is implicit), with the same naming rules as NewCounter. It
// panics on invalid bounds.
func NewHistogram(name string, bounds []float64) *Histogram {
	return &Histogram{m: std.declare(name, abi.Histogram, bounds)}
}

// Observe records v: it counts v in the first bucket whose upper bound is ≥ v (else the +Inf
// bucket), and adds v to the sum.
func (h *Histogram) Observe(v float64) {
	m := h.m
	i := len(m.bounds)
	for j, b := range m.bounds {
		if v <= b {
			i = j
			break
		}
	}
	putU64(m.buckets, 8*i, getU64(m.buckets, 8*i)+1)
	r := m.rec()
	putU64(r, abi.MetricValue, getU64(r, abi.MetricValue)+1)
	putU64(r, abi.MetricSum, math.Float64bits(math.Float64frombits(getU64(r, abi.MetricSum))+v))
}
