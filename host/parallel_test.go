package host_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// TestParallelHosts is 200 parallel tests, each with its own host and the same plugin names,
// each mutating its plugin's config, events and telemetry; none sees another's state.
func TestParallelHosts(t *testing.T) {
	t.Parallel()
	for i := range 200 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			id := strconv.Itoa(i)
			h := hosttest.New(t)
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "ref", Wasm: reference, Instances: 1 + i%2,
				Config: map[string]string{"id": "initial"}, Subscribe: []string{"events"}})
			hosttest.Load(t, h, "other", reference)
			var mu sync.Mutex
			var got []string
			if _, err := h.Subscribe("events", func(m host.Message) {
				mu.Lock()
				got = append(got, m.From+":"+string(m.Data))
				mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			if err := h.Configure(ctx, "ref", map[string]string{"id": id}); err != nil {
				t.Fatal(err)
			}
			call(t, h, "ref", "set", "marker-"+id)
			call(t, h, "ref", "count", id)
			call(t, h, "ref", "emit", "own\n"+id)
			call(t, h, "ref", "publish", "events\nguest-"+id)
			if _, err := h.Publish("events", []byte("go-"+id)); err != nil {
				t.Fatal(err)
			}
			if err := h.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			want := []string{"ref:guest-" + id, ":go-" + id}
			if !slices.Equal(got, want) {
				t.Errorf("Go subscriber got %q, want %q", got, want)
			}
			mu.Unlock()
			if got := call(t, h, "ref", "config_get", "id"); got != id {
				t.Errorf("config = %q", got)
			}
			if got, err := h.Call(ctx, "other", "config_get", []byte("id")); err == nil || !strings.Contains(err.Error(), "missing key") {
				t.Errorf("other plugin sees config %q (%v)", got, err)
			}
			pi, err := h.Plugin("ref")
			if err != nil {
				t.Fatal(err)
			}
			var total float64
			var events []string
			for _, in := range pi.Instances {
				for _, m := range in.Telemetry {
					if m.Name == "requests_total" {
						total += m.Value
					}
				}
				for _, e := range in.Events.Events {
					events = append(events, e.Topic+"="+string(e.Data))
				}
			}
			if total != float64(i) {
				t.Errorf("requests_total = %v, want %d", total, i)
			}
			slices.Sort(events)
			wantEv := []string{"events=go-" + id, "events=guest-" + id, "own=" + id}
			if !slices.Equal(events, wantEv) {
				t.Errorf("guest events %q, want %q", events, wantEv)
			}
			if n := metric(t, h, "wasmvisor_calls_total", "ref"); n != 5 {
				t.Errorf("calls_total = %v", n)
			}
		})
	}
}

// metric reads a counter or gauge of the host's registry for one plugin.
func metric(t testing.TB, h *host.Host, name, plugin string) float64 {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.Metric {
			if label(m, "plugin") != plugin {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 16) // a token per instance started
	h := hosttest.New(t, host.WithLatencySampling(0), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceStarted {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	}))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2})
	ctx := context.Background()
	_, _ = h.Call(ctx, "p", "fail", nil)
	_, _ = h.Call(ctx, "p", "trap", nil)
	call(t, h, "p", "count", "3")
	_, _ = h.Call(ctx, "p", "nope", nil)
	call(t, h, "p", "echo", "")
	// The trapped instance is replaced asynchronously: wait for its successor's start, the
	// third (the event comes after the gauges count it).
	for n := range 3 {
		select {
		case <-started:
		case <-time.After(30 * time.Second): // bounds a hang only
			t.Fatalf("%d instances started; the trapped instance was never replaced", n)
		}
	}
	for name, want := range map[string]float64{
		"wasmvisor_calls_total":           5,
		"wasmvisor_call_errors_total":     3,
		"wasmvisor_call_duration_seconds": 5,
		"wasmvisor_instances":             2,
	} {
		if got := metric(t, h, name, "p"); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, h, "wasmvisor_restarts_total", "p"); got != 1 {
		t.Errorf("restarts = %v", got)
	}
	if got := metric(t, h, "wasmvisor_memory_pages", "p"); got < 2 {
		t.Errorf("memory pages = %v", got)
	}
	mfs, _ := h.Metrics().Gather()
	found := false
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if mf.GetName() == "wasmvisor_guest_slot_metric_total" && label(m, "metric") == "requests_total" && m.Counter.GetValue() == 3 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("guest telemetry requests_total=3 not exported: %v", fmt.Sprint(mfs))
	}
}
