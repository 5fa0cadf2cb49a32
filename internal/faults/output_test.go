package faults_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// countingWriter counts the bytes the host's logger writes, and keeps none.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(b []byte) (int, error) { w.n.Add(int64(len(b))); return len(b), nil }
func (w *countingWriter) Sync() error                 { return nil }

// dropEvents records the EventOutputDropped of one plugin, by stream.
type dropEvents struct {
	mu     sync.Mutex
	n      map[string]int
	bytes  map[string]uint64
	counts map[string]uint64
}

func (d *dropEvents) hook(plugin string) func(host.Event) {
	d.n, d.bytes, d.counts = map[string]int{}, map[string]uint64{}, map[string]uint64{}
	return func(e host.Event) {
		if e.Kind != host.EventOutputDropped || e.Plugin != plugin {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.n[e.Stream]++
		d.bytes[e.Stream] += e.Bytes
		d.counts[e.Stream] += e.Count
	}
}

func (d *dropEvents) get(stream string) (n int, bytes, count uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[stream], d.bytes[stream], d.counts[stream]
}

// dropped reads wasmvisor_guest_output_dropped_bytes_total and _total of plugin and stream.
func dropped(t testing.TB, h *host.Host, plugin, stream string) (bytes, records uint64) {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var p, s string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "plugin":
					p = l.GetValue()
				case "stream":
					s = l.GetValue()
				}
			}
			if p != plugin || s != stream {
				continue
			}
			switch mf.GetName() {
			case "wasmvisor_guest_output_dropped_bytes_total":
				bytes = uint64(m.GetCounter().GetValue())
			case "wasmvisor_guest_output_dropped_total":
				records = uint64(m.GetCounter().GetValue())
			}
		}
	}
	return bytes, records
}

// TestOutputFlood: a plugin floods stdout (one 32 MiB write without a newline, then 20,000
// small lines), stderr, the log import and the bus, each under a 1 s call timeout. Every call
// returns within its timeout and succeeds (excess output is not an error), each stream keeps
// its per-call budget (64 KiB and 256 lines; 64 publishes), the rest is counted exactly and
// reported in a few events (never one per line), the plugin keeps its instance and answers,
// the healthy plugin answers throughout, host memory stays within 32 MiB (the 32 MiB write is
// never buffered whole), and the host writes less than 1 MiB of log for it all.
func TestOutputFlood(t *testing.T) {
	var logBytes countingWriter
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	logger := zap.New(zapcore.NewCore(enc, &logBytes, zapcore.InfoLevel))
	var ev dropEvents
	h := newHost(t, host.WithLogger(logger), host.WithEventHook(ev.hook("flood")))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "flood", Wasm: hostile(t, "output_flood"),
		Limits: sandbox.Limits{CallTimeout: 10 * time.Second}})
	var got atomic.Int64
	sub, err := h.Subscribe("t", func(host.Message) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	first, err := h.Lookup(ctxT(t), "flood", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The guest's memory grows to hold the 32 MiB first: growing is not what is measured.
	if _, err := h.Call(ctxT(t), "flood", "grow", nil); err != nil {
		t.Fatal(err)
	}
	logBase := logBytes.n.Load()
	in := bytes.Repeat([]byte{'n'}, 20) // 20,000 writes, log calls or publishes

	call := func(handler string, in []byte) []byte {
		t.Helper()
		t0 := time.Now()
		out, err := h.Call(ctxT(t), "flood", handler, in)
		if err != nil {
			t.Fatalf("%s: %v (excess output is not an error)", handler, err)
		}
		// Milliseconds unloaded, a few hundred under -race on a loaded machine; the quadratic
		// writer took ~28 s for "big", and its 10 s timeout would have failed the call. The
		// time is logged, not asserted: speed is for benchmarks.
		t.Logf("%s: %v", handler, time.Since(t0))
		return out
	}
	t0 := time.Now()
	withinMemory(t, 32<<20, func() {
		whileHealthy(t, h, func() {
			call("big", nil)
			call("lines", in)
			call("stderr", in)
			call("log", in)
			out := call("publish", in)
			if len(out) != 4 || binary.LittleEndian.Uint32(out) != 64 {
				t.Errorf("publish accepted %x, want 64 (the per-call limit)", out)
			}
			if out := call("echo", []byte("still here")); string(out) != "still here" {
				t.Errorf("echo after the floods: %q", out)
			}
		})
	})
	elapsed := time.Since(t0)
	if hd, err := h.Lookup(ctxT(t), "flood", 0); err != nil || hd.Incarnation() != first.Incarnation() {
		t.Errorf("the flooding instance was replaced (%v): output floods must not end it", err)
	}

	// Counted exactly, at once: what each stream wrote minus its per-call budget.
	want := map[string][2]uint64{
		sandbox.StreamStdout:  {32<<20 - 64<<10 + 2*(20_000-256), 1 + 20_000 - 256},
		sandbox.StreamStderr:  {4 * (20_000 - 256), 20_000 - 256},
		sandbox.StreamLog:     {17 * (20_000 - 256), 20_000 - 256},
		sandbox.StreamPublish: {8 * (20_000 - 64), 20_000 - 64},
	}
	for stream, w := range want {
		if b, r := dropped(t, h, "flood", stream); b != w[0] || r != w[1] {
			t.Errorf("%s: dropped %d bytes %d records, want %d %d", stream, b, r, w[0], w[1])
		}
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 64 {
		t.Errorf("the subscriber got %d messages, want the 64 accepted", got.Load())
	}

	// Reported: each dropped byte in exactly one event, at most one event per stream per
	// second (plus the last, at Close). Reset closes the instance, which reports what is left.
	if err := h.Reset(ctxT(t), "flood"); err != nil {
		t.Fatal(err)
	}
	for stream, w := range want {
		n, b, c := ev.get(stream)
		if b != w[0] || c != w[1] {
			t.Errorf("%s: reported %d bytes %d records in %d events, want %d %d", stream, b, c, n, w[0], w[1])
		}
		if max := 2 + int(elapsed/time.Second); n < 1 || n > max {
			t.Errorf("%s: %d events in %v, want 1 to %d", stream, n, elapsed, max)
		}
	}

	// The host's log: the kept lines (64 KiB + 3 x 256 short lines), a few reports and the
	// healthy plugin's nothing. Without the limits it is over 40 MB.
	if n := logBytes.n.Load() - logBase; n > 1<<20 {
		t.Errorf("the host logged %d KiB for the floods, want < 1 MiB", n>>10)
	}

	// The successor starts clean: fresh budgets, the same answers.
	if out := call("echo", []byte("fresh")); string(out) != "fresh" {
		t.Errorf("successor echo: %q", out)
	}
	b0, r0 := dropped(t, h, "flood", sandbox.StreamLog)
	call("log", []byte{1}) // 1,000 log calls: 256 kept
	if b, r := dropped(t, h, "flood", sandbox.StreamLog); r-r0 != 1000-256 || b-b0 != 17*(1000-256) {
		t.Errorf("successor: dropped %d log records, want 744", r-r0)
	}
	checkHealthy(t, h)
}

// TestOutputStoppedWrite: one fd_write holding 4 million iovecs, which the host serves one
// Write at a time (about half a second of host work), under a 100 ms call timeout. The writer
// checks the stop: the call ends with a *sandbox.DeadlineError long before the write is
// through (fewer than half the iovecs served), the drops are counted, the successor starts
// clean, and the healthy plugin answers throughout.
func TestOutputStoppedWrite(t *testing.T) {
	const iovecs = 4 << 20
	var ev dropEvents
	h := newHost(t, host.WithEventHook(ev.hook("iovecs")))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "iovecs", Wasm: hostile(t, "output_iovecs"),
		Limits: sandbox.Limits{CallTimeout: 100 * time.Millisecond}})
	first, err := h.Lookup(ctxT(t), "iovecs", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The successor writes its own 32 MiB of iovecs at start; the writer allocates nothing.
	withinMemory(t, 96<<20, func() {
		whileHealthy(t, h, func() {
			t0 := time.Now()
			_, err := h.Call(ctxT(t), "iovecs", "iovecs", nil)
			var de *sandbox.DeadlineError
			if !errors.As(err, &de) || de.Caller {
				t.Fatalf("iovecs: %v, want a *sandbox.DeadlineError of the plugin's own timeout", err)
			}
			t.Logf("iovecs returned %v after its start", time.Since(t0))
		})
	})
	hd, err := h.Lookup(ctxT(t), "iovecs", 0)
	if err != nil || hd.Incarnation() == first.Incarnation() {
		t.Fatalf("no successor: %v", err)
	}
	if out, err := h.Call(ctxT(t), "iovecs", "echo", []byte("fresh")); err != nil || string(out) != "fresh" {
		t.Fatalf("successor echo: %q, %v", out, err)
	}
	// Every iovec served is a Write that the budget dropped (after the first 256 lines); the
	// write stopped well before the last.
	if _, r := dropped(t, h, "iovecs", sandbox.StreamStdout); r == 0 || r > iovecs/2 {
		t.Errorf("%d writes dropped of %d iovecs: the write did not stop at the deadline", r, iovecs)
	}
	if n, _, _ := ev.get(sandbox.StreamStdout); n != 1 {
		t.Errorf("%d reports of the stopped write, want 1", n)
	}
	checkHealthy(t, h)
}
