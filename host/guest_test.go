package host_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// A plugin's guest counter and histogram are summed over its instances: what an instance
// that crashed had counted stays in wasmvisor_guest_metric_total and GuestTotals, across
// restarts in one slot and across slots, and never goes down between scrapes.
func TestGuestTotalsSurviveRestarts(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, many()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference, Instances: 2})
	last := 0.0
	want := 0.0
	for round := range 4 {
		for i := range 2 {
			hd, err := h.Lookup(ctxT(t), "ref", i)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hd.Call(ctxT(t), "count", []byte("3")); err != nil {
				t.Fatal(err)
			}
			if _, err := hd.Call(ctxT(t), "observe", []byte("1")); err != nil {
				t.Fatal(err)
			}
			want += 3
			if round%2 == 1 {
				if _, err := hd.Call(ctxT(t), "trap", nil); err == nil {
					t.Fatal("trap: no error")
				}
			}
		}
		got := guestSum(t, h, "ref", "wasmvisor_guest_metric_total", "requests_total")
		if got < last {
			t.Fatalf("round %d: requests_total went down: %v after %v", round, got, last)
		}
		last = got
	}
	// Every call has ended or its instance was read: the sum is exact.
	if got := guestSum(t, h, "ref", "wasmvisor_guest_metric_total", "requests_total"); got != want {
		t.Errorf("requests_total = %v, want %v", got, want)
	}
	if got := guestSum(t, h, "ref", "wasmvisor_guest_observations", "size"); got != 8 {
		t.Errorf("size count = %v, want 8", got)
	}
	tot, err := h.GuestTotals("ref")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range tot {
		if m.Name == "requests_total" {
			found = m.Value == want
		}
	}
	if !found {
		t.Errorf("GuestTotals = %+v, want requests_total %v", tot, want)
	}
	if _, err := h.GuestTotals("nope"); !errors.Is(err, host.ErrNotFound) {
		t.Errorf("GuestTotals(nope) = %v, want ErrNotFound", err)
	}
	if got := metric(t, h, "wasmvisor_restarts_total", "ref"); got != 4 {
		t.Errorf("restarts = %v, want 4", got)
	}
}

// guestSum reads a per-plugin guest series: a counter's value or a histogram's count.
func guestSum(t *testing.T, h *host.Host, plugin, name, metricName string) float64 {
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
			if label(m, "plugin") != plugin || label(m, "metric") != metricName {
				continue
			}
			if label(m, "slot") != "" {
				t.Fatalf("%s has a slot label: %v", name, m)
			}
			if m.Histogram != nil {
				return float64(m.Histogram.GetSampleCount())
			}
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("no %s{plugin=%q, metric=%q}", name, plugin, metricName)
	return 0
}

// No series has a label Prometheus sets on every scraped target (instance, job), and the
// call latency histogram counts every call with WithLatencySampling(0) (the server's
// default; the library's is one call in 64, TestLatencySamplingDefault).
func TestMetricsConventions(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, host.WithLatencySampling(0))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference, Instances: 2})
	for range 8 {
		call(t, h, "ref", "count", "1")
	}
	call(t, h, "ref", "gauge", "-3")
	call(t, h, "ref", "observe", "2")
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "instance" || l.GetName() == "job" {
					t.Errorf("%s has label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}
	if got := metric(t, h, "wasmvisor_call_duration_seconds", "ref"); got != 10 {
		t.Errorf("latency histogram count = %v after 10 calls, want 10", got)
	}
	if got := metric(t, h, "wasmvisor_calls_total", "ref"); got != 10 {
		t.Errorf("calls = %v, want 10", got)
	}
}

// The library's default times one call in 64: after 64 calls the histogram holds one.
func TestLatencySamplingDefault(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference})
	for range 64 {
		call(t, h, "ref", "count", "1")
	}
	if got := metric(t, h, "wasmvisor_call_duration_seconds", "ref"); got != 1 {
		t.Errorf("latency histogram count = %v after 64 calls, want 1 (one in 2^%d)", got, host.DefaultLatencySampling)
	}
}

// Guest events are collected into one log per plugin whose sequence numbers go on across
// instances and restarts; an instance's events are collected before it is closed, and a
// reader resumes from Next.
func TestGuestEventsAcrossRestarts(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, many()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference})
	call(t, h, "ref", "emit", "decision\nd0")
	call(t, h, "ref", "emit", "decision\nd1")
	log, err := h.GuestEvents("ref", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Events) != 2 || log.Next != 2 || log.Events[1].Seq != 1 || string(log.Events[1].Data) != "d1" || log.Events[0].Topic != "decision" {
		t.Fatalf("first read: %+v", log)
	}
	call(t, h, "ref", "emit", "decision\nd2")
	if _, err := h.Call(ctxT(t), "ref", "trap", nil); err == nil {
		t.Fatal("trap: no error")
	}
	call(t, h, "ref", "emit", "decision\nd3") // in the successor
	log, err = h.GuestEvents("ref", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log.Events {
		got = append(got, fmt.Sprintf("%d:%s:%d", e.Seq, e.Data, e.Incarnation))
	}
	if len(log.Events) != 2 || log.Next != 4 || string(log.Events[0].Data) != "d2" || string(log.Events[1].Data) != "d3" ||
		log.Events[0].Incarnation == log.Events[1].Incarnation {
		t.Fatalf("after a crash: %v %+v", got, log)
	}
	log, err = h.GuestEvents("ref", 4, 0)
	if err != nil || len(log.Events) != 0 || log.Next != 4 {
		t.Fatalf("nothing new: %+v %v", log, err)
	}
	log, err = h.GuestEvents("ref", 1, 1)
	if err != nil || len(log.Events) != 1 || log.Next != 2 {
		t.Fatalf("limit 1: %+v %v", log, err)
	}
	if _, err := h.GuestEvents("nope", 0, 0); !errors.Is(err, host.ErrNotFound) {
		t.Errorf("GuestEvents(nope) = %v, want ErrNotFound", err)
	}
}

// The plugin's log holds host.GuestEventLogSize events: a reader that falls further behind
// is told how many it lost, and reads on from the oldest kept.
func TestGuestEventsEvicted(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference})
	const n = host.GuestEventLogSize + 10
	for i := range n {
		call(t, h, "ref", "emit", fmt.Sprintf("t\n%d", i))
		if i%8 == 7 { // the instance's own ring has 16 slots: collect before it wraps
			if _, err := h.GuestEvents("ref", uint64(i), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	log, err := h.GuestEvents("ref", 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if log.Lost != 10 || len(log.Events) != 5 || log.Events[0].Seq != 10 || string(log.Events[0].Data) != "10" || log.GuestLost != 0 {
		t.Fatalf("%+v", log)
	}
}
