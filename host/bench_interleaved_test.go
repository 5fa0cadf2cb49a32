package host_test

import (
	"context"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// BenchmarkCall64Interleaved is BenchmarkCall64 for a loaded machine: it alternates batches
// of 256 bare sandbox calls and 256 Host.CallAppend calls (same plugin, handler and input) in
// one loop and reports, besides the mean, the fastest batch of each in ns per call
// (sandbox-min-ns, host-min-ns) and their ratio (host/sandbox-min). A batch that was not
// preempted is as fast as the code, so the minima compare the two paths even when other
// processes share the CPUs and wall-clock means swing by several times.
func BenchmarkCall64Interleaved(b *testing.B) {
	ctx := context.Background()
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
	h := benchHost(b)
	if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); err != nil {
		b.Fatal(err)
	}
	const batch = 256
	var dst []byte
	minS, minH := time.Duration(1<<62), time.Duration(1<<62)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		for range batch {
			if dst, err = inst.CallAppend(ctx, "echo", in64, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for range batch {
			if dst, err = h.CallAppend(ctx, "ref", "echo", in64, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		minS, minH = min(minS, t1.Sub(t0)), min(minH, t2.Sub(t1))
	}
	b.ReportMetric(float64(minS.Nanoseconds())/batch, "sandbox-min-ns")
	b.ReportMetric(float64(minH.Nanoseconds())/batch, "host-min-ns")
	b.ReportMetric(float64(minH)/float64(minS), "host/sandbox-min")
}
