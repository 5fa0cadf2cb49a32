package host_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

func benchHost(b *testing.B, opts ...host.Option) *host.Host {
	b.Helper()
	ctx := context.Background()
	h, err := host.New(ctx, append([]host.Option{host.WithCacheDir(hosttest.CacheDir())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := h.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return h
}

var in64 = make([]byte, 64)

// callCtx is the context of one call: ctx itself, or, when cancelCtx is set, a fresh
// context.WithCancel of it, as net/http gives every request; done cancels it.
func callCtx(ctx context.Context, cancelCtx bool) (context.Context, context.CancelFunc) {
	if !cancelCtx {
		return ctx, func() {}
	}
	return context.WithCancel(ctx)
}

// BenchmarkCall64 is Host.Call next to a bare sandbox Instance.Call of the same plugin,
// handler and input, both appending into a reused buffer. The -cancelctx variants are the
// path every HTTP request takes: each call gets its own cancellable context (cancelled after
// it), which the sandbox publishes to its watchdog, instead of context.Background.
func BenchmarkCall64(b *testing.B) {
	ctx := context.Background()
	for _, cancelCtx := range []bool{false, true} {
		suffix := ""
		if cancelCtx {
			suffix = "-cancelctx"
		}
		b.Run("sandbox"+suffix, func(b *testing.B) {
			e, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(hosttest.CacheDir()))
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close(ctx)
			m, err := e.Compile(ctx, reference, sandbox.Config{})
			if err != nil {
				b.Fatal(err)
			}
			inst, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			var dst []byte
			b.ReportAllocs()
			for b.Loop() {
				cctx, cancel := callCtx(ctx, cancelCtx)
				dst, err = inst.CallAppend(cctx, "echo", in64, dst[:0])
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("host"+suffix, func(b *testing.B) {
			h := benchHost(b)
			if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); err != nil {
				b.Fatal(err)
			}
			var dst []byte
			var err error
			b.ReportAllocs()
			for b.Loop() {
				cctx, cancel := callCtx(ctx, cancelCtx)
				dst, err = h.CallAppend(cctx, "ref", "echo", in64, dst[:0])
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("host-every-call-timed", func(b *testing.B) {
		h := benchHost(b, host.WithLatencySampling(0))
		if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); err != nil {
			b.Fatal(err)
		}
		var dst []byte
		var err error
		b.ReportAllocs()
		for b.Loop() {
			if dst, err = h.CallAppend(ctx, "ref", "echo", in64, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRestart is crash → successor serving: kill the instance, then call until the
// successor answers. Fresh is what a new instance costs by itself, for comparison.
func BenchmarkRestart(b *testing.B) {
	ctx := context.Background()
	b.Run("crash-to-serving", func(b *testing.B) {
		h := benchHost(b, many()...)
		if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			hd, err := h.Lookup(ctx, "ref", 0)
			if err != nil {
				b.Fatal(err)
			}
			hd.Kill()
			if _, err := h.CallAppend(ctx, "ref", "echo", in64, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh-instance", func(b *testing.B) {
		e, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(hosttest.CacheDir()))
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close(ctx)
		m, err := e.Compile(ctx, reference, sandbox.Config{})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			inst, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := inst.CallAppend(ctx, "echo", in64, nil); err != nil {
				b.Fatal(err)
			}
			_ = inst.Close(ctx)
		}
	})
}

// BenchmarkHosttestNew is what a test pays for its own host and one plugin: what
// hosttest.New and hosttest.Load do (a host on the shared cache dir, a load), then Close.
func BenchmarkHosttestNew(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()))
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); err != nil {
			b.Fatal(err)
		}
		if err := h.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPool2 is the throughput of a 2-instance pool from 1 and 2 goroutines.
func BenchmarkPool2(b *testing.B) {
	ctx := context.Background()
	for _, procs := range []int{1, 2} {
		b.Run("goroutines="+string(rune('0'+procs)), func(b *testing.B) {
			h := benchHost(b)
			if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference, Instances: 2}); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(1)
			b.ReportAllocs()
			if procs == 1 {
				var dst []byte
				var err error
				for b.Loop() {
					if dst, err = h.CallAppend(ctx, "ref", "echo", in64, dst[:0]); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				var dst []byte
				var err error
				for pb.Next() {
					if dst, err = h.CallAppend(ctx, "ref", "echo", in64, dst[:0]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkInstancePerCall is a call on a warm instance next to the same call under
// InstancePerCall, in one run: the standard-Go authz plugin's decision and the WAT reference
// plugin's 64-byte echo. One caller, a pool of 2 (this machine's cores). per-call: calls back
// to back, each waiting for a slot whose reset (a fresh instance, in the background) is done,
// so its time is the call plus whatever of the instantiation the other slot's reset did not
// hide: the throughput cost. per-call-caught-up: each call is timed once the previous call's
// reset is done: the latency a caller sees when the pool keeps up, a call on a fresh
// instance. Its ns/op is the calls' own time, each timed alone; the benchmark's timer keeps
// running over the wait, since B.StopTimer and B.StartTimer read the memory statistics, which
// stops the world right before every timed call.
func BenchmarkInstancePerCall(b *testing.B) {
	ctx := context.Background()
	authz := hosttest.ReadFile(b, "../plugins/authz/authz.wasm")
	decision := []byte(`{"subject":{"id":"a","roles":["admin"]},"action":"read","resource":{"type":"document"}}`)
	for _, c := range []struct {
		name, handler string
		wasm, input   []byte
	}{{"authz", "evaluate", authz, decision}, {"echo", "echo", reference, in64}} {
		for _, mode := range []string{"warm", "per-call", "per-call-caught-up", "per-call-then"} {
			iso := host.InstancePerCall
			if mode == "warm" {
				iso = host.SharedInstance
			}
			caughtUp := mode == "per-call-caught-up"
			if mode == "per-call-then" {
				b.Run(c.name+"-"+mode, func(b *testing.B) {
					benchCallThen(b, c.wasm, c.handler, c.input)
				})
				continue
			}
			b.Run(c.name+"-"+mode, func(b *testing.B) {
				var resets atomic.Uint64
				h := benchHost(b, host.WithResetDoneHook(func() { resets.Add(1) }))
				if err := h.Load(ctx, host.Plugin{Name: "p", Wasm: c.wasm, Instances: 2, Isolation: iso}); err != nil {
					b.Fatal(err)
				}
				dst, err := h.CallAppend(ctx, "p", c.handler, c.input, nil)
				if err != nil || len(dst) == 0 {
					b.Fatalf("%s: %q, %v", c.handler, dst, err)
				}
				calls := uint64(1)      // each call is followed by one reset
				var spent time.Duration // caught-up: the calls alone
				b.ReportAllocs()
				for b.Loop() {
					if caughtUp {
						// The previous call's reset is done: spun for, not waited on, so that the
						// call does not pay for waking an idle CPU.
						for deadline := time.Now().Add(10 * time.Second); resets.Load() < calls; {
							if time.Now().After(deadline) { // a failure limit, not a wait
								b.Fatal("no reset")
							}
						}
					}
					var t0 time.Time
					if caughtUp {
						t0 = time.Now()
					}
					if dst, err = h.CallAppend(ctx, "p", c.handler, c.input, dst[:0]); err != nil {
						b.Fatal(err)
					}
					if caughtUp {
						spent += time.Since(t0)
					}
					calls++
				}
				if caughtUp {
					b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/op")
				}
				if pi, _ := h.Plugin("p"); (iso == host.InstancePerCall) != (pi.Resets > 0) || pi.Restarts != 0 {
					b.Fatalf("resets %d, restarts %d", pi.Resets, pi.Restarts)
				}
			})
		}
	}
}

// benchCallThen is BenchmarkInstancePerCall's per-call-then: Host.CallThen on a pool of 2
// under InstancePerCall, one caller. Its ns/op is the time until the output is in then, the
// latency of a caller that delivers it there (a server's answer); the reset runs after then,
// on the caller's goroutine, and is done when CallThen returns, so every call finds its
// instance reset without a wait. with-reset-ns/op is the whole CallThen, reset included: what
// the caller's goroutine spends a call.
func benchCallThen(b *testing.B, wasm []byte, handler string, input []byte) {
	ctx := context.Background()
	h := benchHost(b)
	if err := h.Load(ctx, host.Plugin{Name: "p", Wasm: wasm, Instances: 2, Isolation: host.InstancePerCall}); err != nil {
		b.Fatal(err)
	}
	var dst []byte
	var failed error
	var t0, got time.Time
	then := func(out []byte, err error) {
		got = time.Now()
		dst, failed = out, err
	}
	h.CallThen(ctx, "p", handler, input, dst, then)
	if failed != nil || len(dst) == 0 {
		b.Fatalf("%s: %q, %v", handler, dst, failed)
	}
	var spent, whole time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 = time.Now()
		h.CallThen(ctx, "p", handler, input, dst[:0], then)
		whole += time.Since(t0)
		spent += got.Sub(t0)
		if failed != nil {
			b.Fatal(failed)
		}
	}
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(whole.Nanoseconds())/float64(b.N), "with-reset-ns/op")
	if pi, _ := h.Plugin("p"); pi.Resets < uint64(b.N) || pi.Restarts != 0 {
		b.Fatalf("resets %d for %d calls, restarts %d", pi.Resets, b.N, pi.Restarts)
	}
}

// BenchmarkSpawnIdle is what a go statement costs the goroutine that runs it when the other
// CPUs are idle, as the start of an InstancePerCall reset does after each call
// (plugin.recycle): the runtime wakes an idle thread for the new goroutine, through the
// kernel, before the statement returns. go-ns is the statement alone; between two, the
// benchmark sleeps so that the CPUs go idle.
func BenchmarkSpawnIdle(b *testing.B) {
	done := make(chan struct{}, 1)
	var spent time.Duration
	for b.Loop() {
		time.Sleep(200 * time.Microsecond) // wallclock: the other CPUs must go idle, which is what is measured
		t0 := time.Now()
		go func() { done <- struct{}{} }()
		spent += time.Since(t0)
		<-done
	}
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "go-ns")
}
