package faults_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Hostile stores: each module below keeps its stores clean until its "arm" handler makes them
// hostile, so that a test can tell the armed instance from its successor, which starts clean.
// The reads under test are the host's: scrapes (Metrics().Gather) and listings (Plugins).

// hostileName is the hostile plugin, loaded next to the healthy one.
const hostileName = "hostile"

// storeEvents records the host events of the kinds a stores test looks at.
type storeEvents struct {
	mu  sync.Mutex
	got map[host.EventKind][]host.Event
}

func (e *storeEvents) hook() host.Option {
	return host.WithEventHook(func(ev host.Event) {
		switch ev.Kind {
		case host.EventStoreViolation, host.EventTelemetryDropped, host.EventInstanceEnded:
			e.mu.Lock()
			if e.got == nil {
				e.got = map[host.EventKind][]host.Event{}
			}
			e.got[ev.Kind] = append(e.got[ev.Kind], ev)
			e.mu.Unlock()
		}
	})
}

func (e *storeEvents) of(k host.EventKind) []host.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]host.Event(nil), e.got[k]...)
}

// armAll calls arm with input on every instance of the hostile plugin.
func armAll(t *testing.T, h *host.Host, instances int, input []byte) {
	t.Helper()
	for i := range instances {
		hd, err := h.Lookup(ctxT(t), hostileName, i)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hd.Call(ctxT(t), "arm", input); err != nil {
			t.Fatalf("arm instance %d: %v", i, err)
		}
	}
}

// scrapeAndList runs one scrape and one listing and checks that both answer: the scrape
// without error and with the healthy plugin's telemetry, the listing as JSON, with each
// healthy instance read (or busy with a call of whileHealthy) and each hostile one checked by
// hostileOK. It returns the listing.
func scrapeAndList(t *testing.T, h *host.Host, hostileOK func(host.InstanceInfo) error) []host.PluginInfo {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "wasmvisor_instances" {
			found = true
		}
	}
	if !found {
		t.Fatal("scrape: no host metrics")
	}
	pis := h.Plugins()
	if _, err := json.Marshal(pis); err != nil {
		t.Fatalf("listing: %v", err)
	}
	for _, pi := range pis {
		for _, ii := range pi.Instances {
			switch pi.Name {
			case healthyName:
				if !ii.Up || ii.ReadErr != nil && !errors.Is(ii.ReadErr, sandbox.ErrBusy) {
					t.Fatalf("listing: healthy instance %d: %+v", ii.Index, ii)
				}
			case hostileName:
				if err := hostileOK(ii); err != nil {
					t.Fatalf("listing: hostile instance %d: %v", ii.Index, err)
				}
			}
		}
	}
	return pis
}

// successorStartsClean kills slot 0 of the hostile plugin and checks its successor: a new
// incarnation that answers, whose stores read clean (nothing of its predecessor's is left).
func successorStartsClean(t *testing.T, h *host.Host, clean func(host.InstanceInfo) error) {
	t.Helper()
	old, err := h.Lookup(ctxT(t), hostileName, 0)
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	<-old.Done()
	hd, err := h.Lookup(ctxT(t), hostileName, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hd.Incarnation() == old.Incarnation() {
		t.Fatal("no successor")
	}
	pi, err := h.Plugin(hostileName)
	if err != nil {
		t.Fatal(err)
	}
	if ii := pi.Instances[0]; !ii.Read || ii.Incarnation != hd.Incarnation() || clean(ii) != nil {
		t.Fatalf("successor: %+v (%v)", ii, clean(ii))
	}
	if out, err := hd.Call(ctxT(t), "echo", []byte("fresh")); err != nil || string(out) != "fresh" {
		t.Fatalf("successor echo: %q, %v", out, err)
	}
}

// noRestarts checks that no read ended an instance of the hostile plugin.
func noRestarts(t *testing.T, h *host.Host, ev *storeEvents) {
	t.Helper()
	pi, err := h.Plugin(hostileName)
	if err != nil {
		t.Fatal(err)
	}
	if pi.Restarts != 0 || len(ev.of(host.EventInstanceEnded)) != 0 {
		t.Fatalf("reads ended instances: %d restarts, %v", pi.Restarts, ev.of(host.EventInstanceEnded))
	}
}

// metricValue is a counter of the host's registry for the hostile plugin.
func metricValue(t *testing.T, h *host.Host, name string) float64 {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "plugin" && l.GetValue() == hostileName {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s for the hostile plugin", name)
	return 0
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// TestStoresMalformed arms one malformed store per case in both instances of the hostile
// plugin, then scrapes and lists 20 times while the healthy plugin is called. Each read of
// the hostile store is the typed violation naming the problem; the scrapes and listings keep
// answering, with the healthy plugin's data, within the memory budget; the violation is
// reported and counted once per instance; no read ends an instance (no restart), and the
// hostile instances keep serving calls; the successor starts clean.
//
// Memory budget: 32 MiB. A malformed store is refused before anything is copied from it; the
// budget covers the scrapes' and listings' own garbage. Before the checks, the 16 MiB aliased
// ring made each listing copy 65,536 × 16 MiB.
func TestStoresMalformed(t *testing.T) {
	for _, c := range []struct {
		name, module string
		arm          []byte
		reason       string
	}{
		{"event ring aliasing one 16 MiB region", "stores_ring_alias", u32(16 << 20), "event 0: topic and data of 16777216 bytes, at most 65536"},
		{"NaN bound", "stores_nan_bounds", nil, `"latency": bound 1 is NaN`},
		{"unsorted bounds", "stores_unsorted_bounds", nil, `"latency": bounds not strictly ascending: bound 1 is 1 after 5`},
		{"duplicate metric names", "stores_dup_names", nil, `metric name "requests_total" listed twice`},
		{"huge metric count", "stores_huge", []byte{0}, "4294967295 metrics, at most 1024"},
		{"huge name length", "stores_huge", []byte{1}, "name of 4294967295 bytes, want 1 to 64"},
		{"huge slot count", "stores_huge", []byte{2}, "event ring has 4294967295 slots"},
		{"huge topic length", "stores_huge", []byte{3}, "event 0: topic and data of 4294967295 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := &storeEvents{}
			h := newHost(t, ev.hook())
			hosttest.LoadPlugin(t, h, host.Plugin{Name: hostileName, Wasm: hostile(t, c.module), Instances: 2})
			armAll(t, h, 2, c.arm)
			violation := func(ii host.InstanceInfo) error {
				var ve *sandbox.ViolationError
				if ii.Read || !errors.As(ii.ReadErr, &ve) || !strings.Contains(ve.Reason, c.reason) {
					return errors.New("want a violation naming " + c.reason + ", got " + errString(ii.ReadErr))
				}
				return nil
			}
			withinMemory(t, 32<<20, func() {
				whileHealthy(t, h, func() {
					for range 20 {
						scrapeAndList(t, h, violation)
					}
				})
			})
			if e := ev.of(host.EventStoreViolation); len(e) != 2 || !errors.Is(e[0].Err, sandbox.ErrABIViolation) {
				t.Errorf("violation events: %v, want one per instance", e)
			}
			if n := metricValue(t, h, "wasmvisor_store_violations_total"); n != 2 {
				t.Errorf("violations counted %v times, want 2", n)
			}
			noRestarts(t, h, ev)
			armAll(t, h, 2, c.arm) // still entered, still serving
			checkHealthy(t, h)
			successorStartsClean(t, h, func(ii host.InstanceInfo) error {
				if ii.ReadErr != nil || len(ii.Telemetry) != 0 || len(ii.Events.Events) != 0 {
					return errors.New("stores not clean")
				}
				return nil
			})
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestStoresAliasedRingWithinBudget arms in both hostile instances an event ring that the
// ABI allows but that no host should copy: 65,536 slots, each an event of 64 KiB, all the
// same bytes (4 GiB if copied). Each listing returns what one read's budget holds of each
// hostile instance (and pages: Events.Next, Remaining), counts the rest, and reports it once;
// the healthy plugin is listed and keeps answering.
//
// Memory budget: 64 MiB: each listing copies at most sandbox.DefaultReadBytes (2 MiB) per
// hostile instance, DefaultReadBudgetBytes (32 MiB) in all; the rest covers GC slack. Under
// the race detector the budget is scaled by its shadow memory (heapBudget).
func TestStoresAliasedRingWithinBudget(t *testing.T) {
	ev := &storeEvents{}
	h := newHost(t, ev.hook())
	hosttest.LoadPlugin(t, h, host.Plugin{Name: hostileName, Wasm: hostile(t, "stores_ring_alias"), Instances: 2})
	armAll(t, h, 2, u32(abi.MaxEventSize))
	const listings = 20
	perRead := sandbox.DefaultReadBytes / (abi.MaxEventSize + sandbox.ReadRecordOverhead)
	bounded := func(ii host.InstanceInfo) error {
		if ii.ReadErr != nil {
			return ii.ReadErr
		}
		if n := len(ii.Events.Events); n == 0 || n > perRead || ii.Events.Next != uint64(n) || ii.Events.Remaining != 1<<16-uint64(n) || ii.Skipped == 0 {
			return errors.New("events not bounded by the read budget")
		}
		return nil
	}
	withinMemory(t, heapBudget(64<<20), func() {
		whileHealthy(t, h, func() {
			for range listings {
				scrapeAndList(t, h, bounded)
			}
		})
	})
	if n := metricValue(t, h, "wasmvisor_store_records_skipped_total"); n < listings*2*(1<<16-float64(perRead)) {
		t.Errorf("skipped records counted: %v", n)
	}
	if e := ev.of(host.EventTelemetryDropped); len(e) != 1 || !errors.Is(e[0].Err, sandbox.ErrReadBudget) {
		t.Errorf("events: %v, want one EventTelemetryDropped matching ErrReadBudget", e)
	}
	if e := ev.of(host.EventStoreViolation); len(e) != 0 {
		t.Errorf("a legal ring reported as a violation: %v", e)
	}
	noRestarts(t, h, ev)
	successorStartsClean(t, h, func(ii host.InstanceInfo) error {
		if len(ii.Events.Events) != 0 || ii.Skipped != 0 {
			return errors.New("events left")
		}
		return nil
	})
}

// TestStoresRenamingGuest calls a guest that renames its counter at every call, and scrapes
// after each call: the hostile plugin's series stay within the caps (20 per instance, 30 per
// plugin here), the excess is counted at every scrape and reported once, and each scrape
// exposes at most one series per hostile instance.
//
// Memory budget: 32 MiB: the series admitted are at most the caps, whatever the guest does.
func TestStoresRenamingGuest(t *testing.T) {
	ev := &storeEvents{}
	h := newHost(t, ev.hook(), host.WithGuestSeriesLimits(20, 30))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: hostileName, Wasm: hostile(t, "stores_rename"), Instances: 2})
	seen := map[string]map[string]bool{}
	withinMemory(t, 32<<20, func() {
		whileHealthy(t, h, func() {
			for n := range 200 {
				hd, err := h.Lookup(ctxT(t), hostileName, n%2) // both instances rename
				if err != nil {
					t.Fatal(err)
				}
				if _, err := hd.Call(ctxT(t), "echo", []byte("x")); err != nil {
					t.Fatal(err)
				}
				mfs, err := h.Metrics().Gather()
				if err != nil {
					t.Fatalf("scrape: %v", err)
				}
				this := 0
				for _, mf := range mfs {
					if mf.GetName() != "wasmvisor_guest_slot_metric_total" {
						continue
					}
					for _, m := range mf.Metric {
						l := map[string]string{}
						for _, p := range m.Label {
							l[p.GetName()] = p.GetValue()
						}
						if l["plugin"] == hostileName {
							this++
							if seen[l["slot"]] == nil {
								seen[l["slot"]] = map[string]bool{}
							}
							seen[l["slot"]][l["metric"]] = true
						}
					}
				}
				if this > 2 {
					t.Fatalf("one scrape exposed %d hostile series", this)
				}
			}
		})
	})
	total := 0
	for inst, names := range seen {
		if len(names) > 20 {
			t.Errorf("instance %s exposed %d distinct series, cap 20", inst, len(names))
		}
		total += len(names)
	}
	if total != 30 {
		t.Errorf("%d distinct hostile series in all, want the plugin cap, 30", total)
	}
	if n := metricValue(t, h, "wasmvisor_guest_series_dropped_total"); n == 0 {
		t.Error("no dropped series counted")
	}
	if e := ev.of(host.EventTelemetryDropped); len(e) != 1 || !errors.Is(e[0].Err, host.ErrSeriesLimit) {
		t.Errorf("events: %v, want one EventTelemetryDropped matching ErrSeriesLimit", e)
	}
	noRestarts(t, h, ev)
	successorStartsClean(t, h, func(ii host.InstanceInfo) error {
		if len(ii.Telemetry) != 1 || ii.Telemetry[0].Name != "renamed_00000000" || ii.Telemetry[0].Value != 0 {
			return errors.New("the counter did not start over")
		}
		return nil
	})
}
