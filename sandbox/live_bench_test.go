package sandbox_test

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// liveInstances is how many instances BenchmarkLiveInstances keeps alive at once.
const liveInstances = 10_000

// BenchmarkLiveInstances starts liveInstances instances of the reference plugin and keeps
// them all alive: what one costs to start (µs/start, the batch's time over its size) and to
// keep (rss-B/instance: the process's resident memory with all of them alive, after a
// collection, less what it was before the batch, over the batch's size). One operation is
// the whole batch, closed at its end.
func BenchmarkLiveInstances(b *testing.B) {
	ctx := context.Background()
	m := compile(b, newEngine(b), referencePath, sandbox.Config{})
	insts := make([]*sandbox.Instance, 0, liveInstances)
	var startNs, rssBytes float64
	runs := 0
	for b.Loop() {
		runtime.GC()
		debug.FreeOSMemory()
		rss0 := residentBytes(b)
		t0 := time.Now()
		for range liveInstances {
			i, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			insts = append(insts, i)
		}
		startNs += float64(time.Since(t0).Nanoseconds())
		runtime.GC()
		rssBytes += float64(residentBytes(b) - rss0)
		runs++
		for _, i := range insts {
			_ = i.Close(ctx)
		}
		insts = insts[:0]
	}
	b.ReportMetric(startNs/float64(runs*liveInstances)/1e3, "µs/start")
	b.ReportMetric(rssBytes/float64(runs*liveInstances), "rss-B/instance")
}

// residentBytes is the process's resident set size, from /proc/self/statm (Linux); 0
// elsewhere.
func residentBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		tb.Fatalf("statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
