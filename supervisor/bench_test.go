package supervisor_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// BenchmarkRestartLatency measures a restart of a trivial child: from its
// crash to its successor being ready.
func BenchmarkRestartLatency(b *testing.B) {
	ctx := context.Background()
	crash := make(chan struct{})
	ready := make(chan struct{})
	errCrash := errors.New("crash")
	spec := supervisor.Spec{ID: "w", Start: supervisor.Func(func(ctx context.Context, r func()) error {
		r()
		ready <- struct{}{}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-crash:
			return errCrash
		}
	})}
	s, err := supervisor.New(supervisor.Config{Intensity: 1 << 30, MinUptime: -1}, spec)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Start(ctx) }()
	<-ready
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		crash <- struct{}{}
		<-ready
	}
	b.StopTimer()
	go func() {
		for range ready {
		}
	}()
	_ = s.Stop(ctx)
	close(ready)
}

// BenchmarkDynamic10k starts 10,000 dynamic children one by one, then stops
// the supervisor (which stops them concurrently).
func BenchmarkDynamic10k(b *testing.B) {
	ctx := context.Background()
	run := supervisor.Func(func(ctx context.Context, ready func()) error {
		ready()
		<-ctx.Done()
		return ctx.Err()
	})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s, err := supervisor.New(supervisor.Config{Strategy: supervisor.Dynamic})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < 10000; j++ {
			if _, err := s.StartChild(ctx, supervisor.Spec{Start: run}); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
