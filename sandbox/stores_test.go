package sandbox_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// storesPath is a module whose memory a test writes at will (handler poke), so that each test
// hand-builds the stores it needs: see testdata/hostile/stores.wat.
const storesPath = "testdata/hostile/stores.wasm"

// Addresses in stores.wasm: the control block, and where the tests build their images.
const (
	ctrlAddr = 64
	img      = 0x1000  // page 0, up to 0xFFFF
	bigImg   = 0x20000 // from the first page grow adds
)

type storeGuest struct {
	t *testing.T
	i *sandbox.Instance
}

func newStoreGuest(t *testing.T, e *sandbox.Engine) *storeGuest {
	t.Helper()
	m := compile(t, e, storesPath, sandbox.Config{})
	return &storeGuest{t: t, i: instantiate(t, m, nil)}
}

// poke writes b at addr in guest memory, through a call (in pieces of at most 60 KiB).
func (g *storeGuest) poke(addr uint32, b []byte) {
	g.t.Helper()
	for len(b) > 0 {
		n := min(len(b), 60<<10)
		in := binary.LittleEndian.AppendUint32(nil, addr)
		if _, err := g.i.Call(context.Background(), "poke", append(in, b[:n]...)); err != nil {
			g.t.Fatalf("poke %#x+%d: %v", addr, n, err)
		}
		addr, b = addr+uint32(n), b[n:]
	}
}

func (g *storeGuest) u32(addr, v uint32) { g.poke(addr, binary.LittleEndian.AppendUint32(nil, v)) }

// grow adds pages of memory (zero).
func (g *storeGuest) grow(pages uint32) {
	g.t.Helper()
	if _, err := g.i.Call(context.Background(), "grow", binary.LittleEndian.AppendUint32(nil, pages)); err != nil {
		g.t.Fatalf("grow %d: %v", pages, err)
	}
}

// metricRec is one 48-byte metric record.
func metricRec(namePtr, nameLen uint32, kind abi.MetricKind, nb, bounds, buckets uint32, value uint64) []byte {
	r := make([]byte, abi.MetricSize)
	binary.LittleEndian.PutUint32(r[abi.MetricNamePtr:], namePtr)
	binary.LittleEndian.PutUint32(r[abi.MetricNameLen:], nameLen)
	binary.LittleEndian.PutUint32(r[abi.MetricKindOff:], uint32(kind))
	binary.LittleEndian.PutUint32(r[abi.MetricBucketCount:], nb)
	binary.LittleEndian.PutUint32(r[abi.MetricBoundsPtr:], bounds)
	binary.LittleEndian.PutUint32(r[abi.MetricBucketsPtr:], buckets)
	binary.LittleEndian.PutUint64(r[abi.MetricValue:], value)
	return r
}

func f64s(vs ...float64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

func u64s(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// metrics points the control block at records.
func (g *storeGuest) metrics(addr uint32, recs ...[]byte) {
	g.t.Helper()
	var all []byte
	for _, r := range recs {
		all = append(all, r...)
	}
	g.poke(addr, all)
	g.u32(ctrlAddr+abi.CtrlMetricsPtr, addr)
	g.u32(ctrlAddr+abi.CtrlMetricsCount, uint32(len(recs)))
}

// ring writes an event ring header at hdr with count slots at slots, written events, and
// points the control block at it.
func (g *storeGuest) ring(hdr, slots, count uint32, written uint64) {
	g.t.Helper()
	h := make([]byte, abi.RingSize)
	binary.LittleEndian.PutUint32(h[abi.RingSlotsPtr:], slots)
	binary.LittleEndian.PutUint32(h[abi.RingSlotCount:], count)
	binary.LittleEndian.PutUint64(h[abi.RingWritten:], written)
	g.poke(hdr, h)
	g.u32(ctrlAddr+abi.CtrlEventsPtr, hdr)
}

// slot is one 24-byte event slot.
func slot(seq uint64, tp, tn, dp, dn uint32) []byte {
	s := binary.LittleEndian.AppendUint64(nil, seq)
	for _, v := range []uint32{tp, tn, dp, dn} {
		s = binary.LittleEndian.AppendUint32(s, v)
	}
	return s
}

// aliasedSlots is count slots, events 0 to count-1, all pointing at the same topic and data.
func aliasedSlots(count uint32, tp, tn, dp, dn uint32) []byte {
	var b []byte
	for s := range count {
		b = append(b, slot(uint64(s), tp, tn, dp, dn)...)
	}
	return b
}

// wantViolation fails unless err is a *ViolationError whose reason contains detail.
func wantViolation(t *testing.T, err error, detail string) {
	t.Helper()
	var ve *sandbox.ViolationError
	if !errors.Is(err, sandbox.ErrABIViolation) || !errors.As(err, &ve) || !strings.Contains(ve.Reason, detail) {
		t.Fatalf("err = %v, want an ABI violation naming %q", err, detail)
	}
}

// TestStoreViolations hand-builds one malformed store per case and checks that the read
// names the problem as a typed violation, that the store stays poisoned (the same error,
// even once the guest repairs it), that the other stores and the calls are unaffected, and
// that the instance has not ended.
func TestStoreViolations(t *testing.T) {
	e := newEngine(t)
	name := func(g *storeGuest, s string) uint32 { g.poke(img+0x800, []byte(s)); return img + 0x800 }
	counter := func(g *storeGuest, nameAt uint32, n uint32) []byte {
		return metricRec(nameAt, n, abi.Counter, 0, 0, 0, 1)
	}
	hist := func(g *storeGuest, bounds []float64, buckets []uint64, count uint64) []byte {
		g.poke(img+0x1000, f64s(bounds...))
		g.poke(img+0x1400, u64s(buckets...))
		return metricRec(name(g, "h"), 1, abi.Histogram, uint32(len(bounds)), img+0x1000, img+0x1400, count)
	}
	telemetry := func(g *storeGuest) error { _, err := g.i.Telemetry(); return err }
	events := func(g *storeGuest) error { _, err := g.i.Events(0); return err }
	config := func(g *storeGuest) error { _, err := g.i.AppliedConfig(); return err }
	for _, c := range []struct {
		name   string
		build  func(g *storeGuest)
		read   func(g *storeGuest) error
		detail string
	}{
		{"too many metrics", func(g *storeGuest) {
			g.u32(ctrlAddr+abi.CtrlMetricsPtr, img)
			g.u32(ctrlAddr+abi.CtrlMetricsCount, abi.MaxMetrics+1)
		}, telemetry, "1025 metrics, at most 1024"},
		{"records out of memory", func(g *storeGuest) {
			g.u32(ctrlAddr+abi.CtrlMetricsPtr, 0x1FFF0)
			g.u32(ctrlAddr+abi.CtrlMetricsCount, 2)
		}, telemetry, "metric records 0x1fff0+96 out of memory"},
		{"empty name", func(g *storeGuest) { g.metrics(img, counter(g, img+0x800, 0)) }, telemetry, "name of 0 bytes"},
		{"huge name length", func(g *storeGuest) { g.metrics(img, counter(g, 0, 0xFFFFFFFF)) }, telemetry, "name of 4294967295 bytes, want 1 to 64"},
		{"name out of memory", func(g *storeGuest) { g.metrics(img, counter(g, 0x1FFFF, 8)) }, telemetry, "name 0x1ffff+8 out of memory"},
		{"invalid name", func(g *storeGuest) { g.metrics(img, counter(g, name(g, "a-b"), 3)) }, telemetry, `invalid name "a-b"`},
		{"duplicate names", func(g *storeGuest) {
			at := name(g, "dup")
			g.metrics(img, counter(g, at, 3), metricRec(at, 3, abi.Gauge, 0, 0, 0, 0))
		}, telemetry, `metric name "dup" listed twice (records 0 and 1)`},
		{"unknown kind", func(g *storeGuest) { g.metrics(img, metricRec(name(g, "k"), 1, 7, 0, 0, 0, 0)) }, telemetry, "unknown kind 7"},
		{"counter with buckets", func(g *storeGuest) { g.metrics(img, metricRec(name(g, "c"), 1, abi.Counter, 2, 0, 0, 0)) }, telemetry, "a counter with 2 buckets"},
		{"too many buckets", func(g *storeGuest) {
			g.metrics(img, metricRec(name(g, "h"), 1, abi.Histogram, abi.MaxBuckets+1, img, img, 0))
		}, telemetry, "65 buckets, at most 64"},
		{"NaN bound", func(g *storeGuest) { g.metrics(img, hist(g, []float64{1, math.NaN()}, []uint64{0, 0, 0}, 0)) }, telemetry, "bound 1 is NaN"},
		{"infinite bound", func(g *storeGuest) { g.metrics(img, hist(g, []float64{math.Inf(1)}, []uint64{0, 0}, 0)) }, telemetry, "bound 0 is +Inf"},
		{"unsorted bounds", func(g *storeGuest) { g.metrics(img, hist(g, []float64{5, 1}, []uint64{0, 0, 0}, 0)) }, telemetry, "not strictly ascending: bound 1 is 1 after 5"},
		{"equal bounds", func(g *storeGuest) { g.metrics(img, hist(g, []float64{1, 1}, []uint64{0, 0, 0}, 0)) }, telemetry, "not strictly ascending"},
		{"buckets and count disagree", func(g *storeGuest) { g.metrics(img, hist(g, []float64{1}, []uint64{2, 3}, 4)) }, telemetry, "buckets add up to 5, the observation count is 4"},
		{"buckets out of memory", func(g *storeGuest) {
			g.metrics(img, metricRec(name(g, "h"), 1, abi.Histogram, 2, img, 0x1FFF8, 0))
		}, telemetry, "histogram buckets 0x1fff8+24 out of memory"},
		{"no slots", func(g *storeGuest) { g.ring(img, img+64, 0, 0) }, events, "event ring has 0 slots"},
		{"too many slots", func(g *storeGuest) { g.ring(img, img+64, abi.MaxSlots+1, 0) }, events, "event ring has 65537 slots"},
		{"slots out of memory", func(g *storeGuest) { g.ring(img, 0x1F000, 1000, 0) }, events, "event ring slots 0x1f000+24000 out of memory"},
		{"ring header out of memory", func(g *storeGuest) { g.u32(ctrlAddr+abi.CtrlEventsPtr, 0x1FFF0) }, events, "event ring header 0x1fff0 out of memory"},
		{"event larger than the ABI allows", func(g *storeGuest) {
			g.poke(img+64, slot(0, 0, 0, 0, 16<<20)) // 16 MiB: checked before the memory is
			g.ring(img, img+64, 1, 1)
		}, events, "event 0: topic and data of 16777216 bytes, at most 65536"},
		{"event data out of memory", func(g *storeGuest) {
			g.poke(img+64, slot(0, 0, 0, 0x1FF00, 4096))
			g.ring(img, img+64, 1, 1)
		}, events, "event 0: event data 0x1ff00+4096 out of memory"},
		{"config out of memory", func(g *storeGuest) {
			g.u32(ctrlAddr+abi.CtrlConfigPtr, 0x1FFF0)
			g.u32(ctrlAddr+abi.CtrlConfigLen, 100)
		}, config, "applied config 0x1fff0+100 out of memory"},
		{"malformed config", func(g *storeGuest) {
			g.poke(img, []byte{1, 0, 0, 0, 200, 0, 0, 0})
			g.u32(ctrlAddr+abi.CtrlConfigPtr, img)
			g.u32(ctrlAddr+abi.CtrlConfigLen, 8)
		}, config, "applied config: abi: malformed encoding"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newStoreGuest(t, e)
			c.build(g)
			err := c.read(g)
			wantViolation(t, err, c.detail)
			// Poisoned: the same error, without reading, even once the guest clears its store.
			for _, off := range []uint32{abi.CtrlMetricsCount, abi.CtrlEventsPtr, abi.CtrlConfigLen} {
				g.u32(ctrlAddr+off, 0)
			}
			if again := c.read(g); again != err { //nolint:errorlint // the very same error is the point
				t.Errorf("second read: %v, want the same error %v", again, err)
			}
			// The instance has not ended: it is still entered, and its other stores read.
			if ierr := g.i.Err(); ierr != nil {
				t.Errorf("the read ended the instance: %v", ierr)
			}
			for _, r := range []func(*storeGuest) error{telemetry, events, config} {
				if err := r(g); err != nil && !errors.Is(err, sandbox.ErrABIViolation) {
					t.Errorf("another store: %v", err)
				}
			}
			g.u32(img, 1) // a call: it would fail on an ended instance
		})
	}
}

// TestStoreReadsAreBudgeted checks that each read copies at most its budget, sizes checked
// before copying, and says what it left out.
func TestStoreReadsAreBudgeted(t *testing.T) {
	e := newEngine(t)

	t.Run("events page on from Next", func(t *testing.T) {
		g := newStoreGuest(t, e)
		g.poke(img+0x4000, []byte(strings.Repeat("d", 1000)))
		g.poke(img+0x100, aliasedSlots(16, 0, 0, img+0x4000, 1000))
		g.ring(img, img+0x100, 16, 16)
		b := &sandbox.Budget{Bytes: 3 * (1000 + sandbox.ReadRecordOverhead), Records: 100}
		log, err := g.i.EventsWithin(0, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(log.Events) != 3 || log.Next != 3 || log.Remaining != 13 || b.Skipped != 13 || b.Bytes != 0 || b.Records != 97 {
			t.Fatalf("got %d events, Next %d, Remaining %d; budget %+v", len(log.Events), log.Next, log.Remaining, *b)
		}
		log, err = g.i.EventsWithin(log.Next, nil)
		if err != nil || len(log.Events) != 13 || log.Events[0].Seq != 3 || log.Next != 16 || log.Remaining != 0 {
			t.Fatalf("read on: %d events from %d, Next %d, Remaining %d, err %v", len(log.Events), log.Events[0].Seq, log.Next, log.Remaining, err)
		}
	})

	t.Run("an aliased ring of the largest events copies one read's budget", func(t *testing.T) {
		g := newStoreGuest(t, e)
		g.grow(30) // 2 MiB: the slots (1.5 MiB) and one 64 KiB region
		const count = abi.MaxSlots
		g.poke(bigImg, aliasedSlots(count, 0, 0, bigImg+count*abi.SlotSize, abi.MaxEventSize))
		g.ring(img, bigImg, count, count)
		var log sandbox.EventLog
		alloc := allocated(t, func() {
			var err error
			if log, err = g.i.Events(0); err != nil {
				t.Fatal(err)
			}
		})
		per := abi.MaxEventSize + sandbox.ReadRecordOverhead
		if want := sandbox.DefaultReadBytes / per; len(log.Events) != want || log.Remaining != count-uint64(want) {
			t.Fatalf("got %d events (Remaining %d), want %d", len(log.Events), log.Remaining, want)
		}
		if limit := uint64(sandbox.DefaultReadBytes + 1<<20); alloc > limit {
			t.Fatalf("the read allocated %d bytes, more than %d", alloc, limit)
		}
	})

	t.Run("the largest telemetry fits one read, and a smaller budget takes a prefix", func(t *testing.T) {
		g := newStoreGuest(t, e)
		g.grow(2)
		// 1,024 histograms of 64 buckets with 64-byte names, sharing bounds and buckets.
		bounds := make([]float64, abi.MaxBuckets)
		for k := range bounds {
			bounds[k] = float64(k)
		}
		g.poke(img, f64s(bounds...))
		g.poke(img+0x400, make([]byte, 8*(abi.MaxBuckets+1)))
		var recs, names []byte
		for k := range abi.MaxMetrics {
			n := []byte(strings.Repeat("m", 60) + string(rune('a'+k/(26*26)%26)) + string(rune('a'+k/26%26)) + string(rune('a'+k%26)) + "_")
			names = append(names, n...)
			recs = append(recs, metricRec(bigImg+0x10000+uint32(64*k), 64, abi.Histogram, abi.MaxBuckets, img, img+0x400, 0)...)
		}
		g.poke(bigImg+0x10000, names)
		g.metrics(bigImg, bytesSplit(recs)...)
		var ms []sandbox.Metric
		alloc := allocated(t, func() {
			var err error
			if ms, err = g.i.Telemetry(); err != nil {
				t.Fatal(err)
			}
		})
		if len(ms) != abi.MaxMetrics {
			t.Fatalf("read %d metrics, want all %d", len(ms), abi.MaxMetrics)
		}
		if limit := uint64(sandbox.DefaultReadBytes); alloc > limit {
			t.Fatalf("the read allocated %d bytes, more than %d", alloc, limit)
		}
		b := &sandbox.Budget{Bytes: 1 << 20, Records: 10}
		if ms, err := g.i.TelemetryWithin(b); err != nil || len(ms) != 10 || b.Skipped != abi.MaxMetrics-10 || b.Records != 0 {
			t.Fatalf("within 10 records: %d metrics, budget %+v, err %v", len(ms), *b, err)
		}
	})

	t.Run("a config that does not fit is not read, and not a violation", func(t *testing.T) {
		g := newStoreGuest(t, e)
		enc := abi.AppendConfig(nil, map[string]string{"k": strings.Repeat("v", 5000)})
		g.poke(img, enc)
		g.u32(ctrlAddr+abi.CtrlConfigPtr, img)
		g.u32(ctrlAddr+abi.CtrlConfigLen, uint32(len(enc)))
		b := &sandbox.Budget{Bytes: 4096, Records: 10}
		if _, err := g.i.AppliedConfigWithin(b); !errors.Is(err, sandbox.ErrReadBudget) || b.Skipped != 1 || b.Bytes != 4096 {
			t.Fatalf("err = %v, budget %+v; want ErrReadBudget, one skipped, nothing taken", err, *b)
		}
		if cfg, err := g.i.AppliedConfig(); err != nil || len(cfg["k"]) != 5000 {
			t.Fatalf("with the default budget: %d bytes, %v", len(cfg["k"]), err)
		}
	})

	t.Run("a shared budget is drawn down by every read", func(t *testing.T) {
		g := newStoreGuest(t, e)
		g.poke(img+0x800, []byte("c"))
		g.metrics(img, metricRec(img+0x800, 1, abi.Counter, 0, 0, 0, 7))
		b := &sandbox.Budget{Bytes: 2 * (1 + sandbox.ReadRecordOverhead), Records: 2}
		for range 2 {
			if ms, err := g.i.TelemetryWithin(b); err != nil || len(ms) != 1 || ms[0].Value != 7 {
				t.Fatalf("got %v, %v", ms, err)
			}
		}
		if ms, err := g.i.TelemetryWithin(b); err != nil || len(ms) != 0 || b.Skipped != 1 {
			t.Fatalf("third read on an empty budget: %v, %v, budget %+v", ms, err, *b)
		}
	})
}

// bytesSplit cuts concatenated metric records apart again.
func bytesSplit(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		out = append(out, b[:abi.MetricSize])
		b = b[abi.MetricSize:]
	}
	return out
}

// allocated is the bytes the Go heap handed out while f ran (nothing else runs meanwhile).
func allocated(t *testing.T, f func()) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMetricJSON: the keys are snake_case and the kind a name; a gauge or sum JSON has no
// number for is written as a string, so that a listing that holds it still encodes.
func TestMetricJSON(t *testing.T) {
	b, err := json.Marshal([]sandbox.Metric{
		{Name: "g", Kind: abi.Gauge, Value: math.NaN()},
		{Name: "h", Kind: abi.Histogram, Bounds: []float64{1}, Buckets: []uint64{1, 0}, Count: 1, Sum: math.Inf(-1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"g","kind":"gauge","value":"NaN","count":0,"sum":0},` +
		`{"name":"h","kind":"histogram","value":0,"bounds":[1],"buckets":[1,0],"count":1,"sum":"-Inf"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
