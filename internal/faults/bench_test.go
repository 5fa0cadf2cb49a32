package faults_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// BenchmarkDeadlineOvershoot measures how late past its timeout each hostile module's call
// ends (the figure TestDeadlineHoldsForEveryInstruction does not assert): one call per
// iteration under a 10 ms timeout, each to a fresh successor; overshoot-µs is the median
// over the iterations of (time the call took − 10 ms); ns/op includes the wait for the
// successor.
func BenchmarkDeadlineOvershoot(b *testing.B) {
	const timeout = 10 * time.Millisecond
	for _, m := range deadlineModules {
		b.Run(m.name, func(b *testing.B) {
			h := hosttest.New(b, crashy(host.WithLogger(zap.NewNop()))...)
			hosttest.LoadPlugin(b, h, host.Plugin{Name: "hostile", Wasm: hostile(b, m.name),
				Limits: sandbox.Limits{CallTimeout: timeout, MemoryPages: 1024}})
			ctx := context.Background()
			over := make([]time.Duration, 0, b.N)
			for b.Loop() {
				hd, err := h.Lookup(ctx, "hostile", 0) // waits for the successor, outside the figure
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				_, err = hd.Call(ctx, "run", nil)
				d := time.Since(t0)
				if !errors.Is(err, sandbox.ErrDeadline) {
					b.Fatalf("call = %v, want a deadline", err)
				}
				over = append(over, d-timeout)
			}
			b.ReportMetric(float64(median(over).Microseconds()), "overshoot-µs")
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
