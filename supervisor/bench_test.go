package supervisor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkRestartNotifier is BenchmarkRestartLatency for a Notifier child that the
// benchmark's goroutine crashes: an idle supervisor restarts it on that goroutine, so the
// successor has started when the crash returns (RATIONALE.md, "Restarts without
// hand-offs"). Next to it, BenchmarkHandOffIdle is what each hand-off it saves costs.
func BenchmarkRestartNotifier(b *testing.B) {
	ctx := context.Background()
	var cur atomic.Pointer[notifyingBench]
	errCrash := errors.New("crash")
	spec := supervisor.Spec{ID: "w", Start: func(context.Context) (supervisor.Child, error) {
		c := &notifyingBench{done: make(chan struct{})}
		cur.Store(c)
		return c, nil
	}}
	s, err := supervisor.New(supervisor.Config{Intensity: 1 << 30, MinUptime: -1}, spec)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	// Start returns before the loop runs; a method's answer comes from it.
	if _, err := s.Lookup(ctx, "w"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c := cur.Load()
		c.end(errCrash)
		if cur.Load() == c {
			b.Fatal("an idle supervisor did not restart the child on the crashing goroutine")
		}
	}
	_ = s.Stop(ctx)
}

// BenchmarkHandOffIdle is what handing a value to a parked goroutine and waiting for its
// answer costs when the machine is otherwise idle, as a restart through the loop did twice
// (the end to the loop, the successor to a waiting caller): between two hand-offs the
// benchmark sleeps, so that the other CPUs go idle. handoff-ns is the hand-off alone.
func BenchmarkHandOffIdle(b *testing.B) {
	req, resp := make(chan struct{}), make(chan struct{})
	go func() {
		for range req {
			resp <- struct{}{}
		}
	}()
	var spent time.Duration
	for b.Loop() {
		time.Sleep(200 * time.Microsecond) // wallclock: the other CPUs must go idle, which is what is measured
		t0 := time.Now()
		req <- struct{}{}
		<-resp
		spent += time.Since(t0)
	}
	close(req)
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "handoff-ns")
}
