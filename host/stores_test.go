package host_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// storesModule lets a test write any bytes anywhere in its memory (handler poke), so that it
// can build any store: see sandbox/testdata/hostile/stores.wat. Its control block is at 64.
var storesModule = func() []byte {
	b, err := os.ReadFile("../sandbox/testdata/hostile/stores.wasm")
	if err != nil {
		panic(err)
	}
	return b
}()

const storesCtrl = 64

// events records the host events of the kinds asked for.
type events struct {
	mu   sync.Mutex
	got  []host.Event
	want map[host.EventKind]bool
}

func recordEvents(kinds ...host.EventKind) *events {
	e := &events{want: map[host.EventKind]bool{}}
	for _, k := range kinds {
		e.want[k] = true
	}
	return e
}

func (e *events) hook() host.Option {
	return host.WithEventHook(func(ev host.Event) {
		if e.want[ev.Kind] {
			e.mu.Lock()
			e.got = append(e.got, ev)
			e.mu.Unlock()
		}
	})
}

func (e *events) of(k host.EventKind) []host.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []host.Event
	for _, ev := range e.got {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// TestReadsNeverEndHealthyInstances scrapes and lists, from two goroutines, while two others
// call a one-instance plugin (so that nearly every read finds a caller waiting, and nearly
// every caller meets a read): no instance ends, no restart is counted, and no call fails or
// waits out its deadline. A read that did not hand the instance on when it returns (as a
// call does) would leave a caller asleep until its deadline.
func TestReadsNeverEndHealthyInstances(t *testing.T) {
	t.Parallel()
	ev := recordEvents(host.EventInstanceEnded, host.EventStoreViolation)
	h := hosttest.New(t, ev.hook())
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference})
	call(t, h, "ref", "emit", "topic\ndata")
	before, err := h.Plugin("ref")
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 400
	var wg sync.WaitGroup
	var calls atomic.Int64
	stop := make(chan struct{})
	fail := make(chan error, 4)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			handlers := []string{"count", "observe", "gauge"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := h.Call(ctx, "ref", handlers[(n+g)%3], []byte("1"))
				cancel()
				if err != nil {
					fail <- err
					return
				}
				calls.Add(1)
			}
		}()
	}
	var readers sync.WaitGroup
	for g := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for range rounds {
				if g == 0 {
					if _, err := h.Metrics().Gather(); err != nil {
						fail <- err
						return
					}
				} else {
					_ = h.Plugins()
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatalf("while reading: %v", err)
	}
	after, err := h.Plugin("ref")
	if err != nil {
		t.Fatal(err)
	}
	if after.Restarts != before.Restarts || after.Instances[0].Incarnation != before.Instances[0].Incarnation {
		t.Errorf("restarts %d → %d, incarnation %d → %d", before.Restarts, after.Restarts,
			before.Instances[0].Incarnation, after.Instances[0].Incarnation)
	}
	if e := ev.of(host.EventInstanceEnded); len(e) != 0 || len(ev.of(host.EventStoreViolation)) != 0 {
		t.Errorf("instances ended: %v", e)
	}
	if !after.Instances[0].Read || len(after.Instances[0].Events.Events) != 1 {
		t.Errorf("the last listing read %+v", after.Instances[0])
	}
	t.Logf("%d calls beside %d scrapes and %d listings", calls.Load(), rounds, rounds)
}

// pokeSlot writes b at addr in the memory of slot i of plugin name.
func pokeSlot(t *testing.T, h *host.Host, name string, i int, addr uint32, b []byte) {
	t.Helper()
	hd, err := h.Lookup(ctxT(t), name, i)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hd.Call(ctxT(t), "poke", append(binary.LittleEndian.AppendUint32(nil, addr), b...)); err != nil {
		t.Fatalf("poke: %v", err)
	}
}

func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// setCounter makes slot i's only metric a counter named name (at most 64 bytes), value v.
func setCounter(t *testing.T, h *host.Host, plugin string, i int, name string, v uint64) {
	t.Helper()
	rec := make([]byte, abi.MetricSize)
	binary.LittleEndian.PutUint32(rec[abi.MetricNamePtr:], 0x1100)
	binary.LittleEndian.PutUint32(rec[abi.MetricNameLen:], uint32(len(name)))
	binary.LittleEndian.PutUint32(rec[abi.MetricKindOff:], uint32(abi.Counter))
	binary.LittleEndian.PutUint64(rec[abi.MetricValue:], v)
	pokeSlot(t, h, plugin, i, 0x1100, []byte(name))
	pokeSlot(t, h, plugin, i, 0x1000, rec)
	pokeSlot(t, h, plugin, i, storesCtrl+abi.CtrlMetricsPtr, append(u32le(0x1000), u32le(1)...))
}

// guestNames is the guest counter names one scrape exposes, by instance label.
func guestNames(t *testing.T, h *host.Host, plugin string) map[string][]string {
	t.Helper()
	out, _ := scrape(t, h, plugin)
	return out
}

// scrape gathers once: the guest counter names by instance label, and the series dropped.
func scrape(t *testing.T, h *host.Host, plugin string) (map[string][]string, float64) {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	dropped := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "wasmvisor_guest_series_dropped_total" {
			for _, m := range mf.Metric {
				if label(m, "plugin") == plugin {
					dropped = m.Counter.GetValue()
				}
			}
		}
		if mf.GetName() != "wasmvisor_guest_slot_metric_total" {
			continue
		}
		for _, m := range mf.Metric {
			if label(m, "plugin") == plugin {
				out[label(m, "slot")] = append(out[label(m, "slot")], label(m, "metric"))
			}
		}
	}
	return out, dropped
}

// TestGuestSeriesCaps renames a guest's metric before every scrape: the registry exposes at
// most the per-instance cap of distinct names per slot and the per-plugin cap in all, the
// excess is counted at each scrape, and reported once per transition into dropping. The
// healthy plugin beside it (9 series: a counter, a gauge, a histogram of 4 bounds) keeps all
// its series.
func TestGuestSeriesCaps(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name                   string
		perInstance, perPlugin int
		want                   int // distinct names exposed per slot
	}{
		{"per instance", 9, 1000, 9},
		{"per plugin", 9, 12, 6},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ev := recordEvents(host.EventTelemetryDropped)
			h := hosttest.New(t, ev.hook(), host.WithGuestSeriesLimits(c.perInstance, c.perPlugin))
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "renamer", Wasm: storesModule, Instances: 2})
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference})
			call(t, h, "ref", "count", "7")
			const rounds = 12
			seen := map[string]map[string]bool{"0": {}, "1": {}}
			exposed := 0
			var dropped float64
			for n := range rounds {
				for i := range 2 {
					setCounter(t, h, "renamer", i, "renamed_"+strconv.Itoa(n), uint64(n))
				}
				var names map[string][]string
				names, dropped = scrape(t, h, "renamer")
				for inst, names := range names {
					exposed += len(names)
					for _, name := range names {
						seen[inst][name] = true
					}
				}
			}
			if len(seen["0"]) != c.want || len(seen["1"]) != c.want {
				t.Errorf("distinct names exposed: %v, want %d per slot", seen, c.want)
			}
			if want := 2*rounds - 2*c.want; exposed != 2*c.want || dropped != float64(want) {
				t.Errorf("exposed %d, dropped %v; want %d and %d", exposed, dropped, 2*c.want, want)
			}
			if e := ev.of(host.EventTelemetryDropped); len(e) != 1 || !errors.Is(e[0].Err, host.ErrSeriesLimit) || e[0].Plugin != "renamer" {
				t.Fatalf("events %v, want one EventTelemetryDropped matching ErrSeriesLimit", e)
			}
			// Back to admitted names: nothing dropped, and the report re-arms: a new name
			// reports again.
			setCounter(t, h, "renamer", 0, "renamed_0", 1)
			setCounter(t, h, "renamer", 1, "renamed_1", 1)
			if got := guestNames(t, h, "renamer"); len(got["0"]) != 1 || len(got["1"]) != 1 {
				t.Errorf("admitted names not exposed: %v", got)
			}
			setCounter(t, h, "renamer", 0, "renamed_99", 1)
			guestNames(t, h, "renamer")
			if e := ev.of(host.EventTelemetryDropped); len(e) != 2 {
				t.Errorf("%d events, want a second one after the re-arm", len(e))
			}
			if got := guestNames(t, h, "ref"); len(got["0"]) != 1 || got["0"][0] != "requests_total" {
				t.Errorf("healthy plugin's counters: %v", got)
			}
			if n := metric(t, h, "wasmvisor_guest_observations", "ref"); n != 0 { // its sample count
				t.Errorf("healthy plugin's histogram: %v samples", n)
			}
		})
	}
}

// TestStoreViolationIsReportedOnce: a guest histogram with a NaN bound is a typed violation
// in the listing and is left out of scrapes, reported and counted once, however often it is
// read; the instance keeps serving, and the other plugin's telemetry is scraped and listed.
func TestStoreViolationIsReportedOnce(t *testing.T) {
	t.Parallel()
	ev := recordEvents(host.EventStoreViolation, host.EventInstanceEnded)
	h := hosttest.New(t, ev.hook())
	hosttest.Load(t, h, "bad", storesModule)
	hosttest.Load(t, h, "ref", reference)
	call(t, h, "ref", "count", "2")
	rec := make([]byte, abi.MetricSize)
	binary.LittleEndian.PutUint32(rec[abi.MetricNamePtr:], 0x1100)
	binary.LittleEndian.PutUint32(rec[abi.MetricNameLen:], 1)
	binary.LittleEndian.PutUint32(rec[abi.MetricKindOff:], uint32(abi.Histogram))
	binary.LittleEndian.PutUint32(rec[abi.MetricBucketCount:], 1)
	binary.LittleEndian.PutUint32(rec[abi.MetricBoundsPtr:], 0x1200)
	binary.LittleEndian.PutUint32(rec[abi.MetricBucketsPtr:], 0x1300)
	pokeSlot(t, h, "bad", 0, 0x1100, []byte("h"))
	pokeSlot(t, h, "bad", 0, 0x1200, binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN())))
	pokeSlot(t, h, "bad", 0, 0x1000, rec)
	pokeSlot(t, h, "bad", 0, storesCtrl+abi.CtrlMetricsPtr, append(u32le(0x1000), u32le(1)...))

	for range 3 {
		if got := guestNames(t, h, "ref"); len(got["0"]) != 1 {
			t.Fatalf("healthy plugin not scraped: %v", got)
		}
		for _, pi := range h.Plugins() {
			ii := pi.Instances[0]
			switch pi.Name {
			case "bad":
				var ve *sandbox.ViolationError
				if ii.Read || !errors.As(ii.ReadErr, &ve) {
					t.Fatalf("bad plugin listed as %+v, want a violation", ii)
				}
			case "ref":
				if !ii.Read || len(ii.Telemetry) != 3 {
					t.Fatalf("healthy plugin listed as %+v", ii)
				}
			}
		}
	}
	if e := ev.of(host.EventStoreViolation); len(e) != 1 || !errors.Is(e[0].Err, sandbox.ErrABIViolation) {
		t.Errorf("violation events %v, want one", e)
	}
	if n := metric(t, h, "wasmvisor_store_violations_total", "bad"); n != 1 {
		t.Errorf("store violations counted %v times, want 1", n)
	}
	if e := ev.of(host.EventInstanceEnded); len(e) != 0 {
		t.Errorf("the read ended instances: %v", e)
	}
	pokeSlot(t, h, "bad", 0, 0x2000, []byte("still serving"))
	if n := metric(t, h, "wasmvisor_call_errors_total", "bad"); n != 0 {
		t.Errorf("the violation was counted as %v call errors", n)
	}
}

// TestReadBudgetIsSharedAndReported: a listing's budget is shared fairly across instances;
// what it leaves out is counted, reported once per transition, and paged (Events.Next).
func TestReadBudgetIsSharedAndReported(t *testing.T) {
	t.Parallel()
	ev := recordEvents(host.EventTelemetryDropped)
	// Two instances, each with 16 events of 1,000 bytes; the budget holds 8 of them in all.
	per := 1000 + sandbox.ReadRecordOverhead
	h := hosttest.New(t, ev.hook(), host.WithReadBudget(8*per, 1000))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "big", Wasm: storesModule, Instances: 2})
	for i := range 2 {
		var slots []byte
		for s := range 16 {
			slots = binary.LittleEndian.AppendUint64(slots, uint64(s))
			slots = append(slots, u32le(0)...)
			slots = append(slots, u32le(0)...)
			slots = append(slots, u32le(0x4000)...)
			slots = append(slots, u32le(1000)...)
		}
		pokeSlot(t, h, "big", i, 0x1100, slots)
		hdr := append(u32le(0x1100), u32le(16)...)
		hdr = binary.LittleEndian.AppendUint64(hdr, 16)
		pokeSlot(t, h, "big", i, 0x1000, append(hdr, make([]byte, 16)...))
		pokeSlot(t, h, "big", i, storesCtrl+abi.CtrlEventsPtr, u32le(0x1000))
	}
	for range 3 {
		pi, err := h.Plugin("big")
		if err != nil {
			t.Fatal(err)
		}
		for _, ii := range pi.Instances {
			if !ii.Read || len(ii.Events.Events) != 4 || ii.Events.Next != 4 || ii.Events.Remaining != 12 || ii.Skipped != 12 {
				t.Fatalf("instance %d: %d events, Next %d, Remaining %d, Skipped %d (%v); want 4 of 16 each",
					ii.Index, len(ii.Events.Events), ii.Events.Next, ii.Events.Remaining, ii.Skipped, ii.ReadErr)
			}
		}
	}
	if n := metric(t, h, "wasmvisor_store_records_skipped_total", "big"); n != 3*24 {
		t.Errorf("skipped %v, want %d", n, 3*24)
	}
	if e := ev.of(host.EventTelemetryDropped); len(e) != 1 || !errors.Is(e[0].Err, sandbox.ErrReadBudget) {
		t.Errorf("events %v, want one matching ErrReadBudget", e)
	}
}
