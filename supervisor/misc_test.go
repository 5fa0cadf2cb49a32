package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

func TestHandles(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		s := h.start(supervisor.Config{}, h.spec("a"))
		old, err := s.Lookup(ctx, "a")
		if err != nil || old.ID() != "a" || old.Incarnation() == 0 {
			t.Fatalf("Lookup: %v %v", old, err)
		}
		if _, err := old.Child(); err != nil {
			t.Fatal(err)
		}
		h.crash("a", errBoom)
		cur, err := s.Lookup(ctx, "a")
		if err != nil || cur.Incarnation() <= old.Incarnation() {
			t.Fatalf("Lookup after restart: %v %v", cur, err)
		}
		if _, err := old.Child(); !errors.Is(err, supervisor.ErrStaleHandle) {
			t.Fatalf("stale Child: %v", err)
		}
		if err := old.Terminate(ctx); !errors.Is(err, supervisor.ErrStaleHandle) {
			t.Fatalf("stale Terminate: %v", err)
		}
		wantLog(t, h.states(), "a:running") // the successor was not touched
		if err := cur.Terminate(ctx); err != nil {
			t.Fatal(err)
		}
		wantLog(t, h.states(), "a:stopped")
		if _, err := (supervisor.Handle{}).Child(); !errors.Is(err, supervisor.ErrStaleHandle) {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, "a"); !errors.Is(err, supervisor.ErrStaleHandle) {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, "nope"); !errors.Is(err, supervisor.ErrNotFound) {
			t.Fatal(err)
		}
		h.stop()
	})
}

func TestChildren(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		sub := supervisor.Subtree("sub", supervisor.Config{}, h.spec("x"))
		h.start(supervisor.Config{}, h.spec("a", transient), sub)
		h.crash("a", errBoom)
		h.crash("a", nil)
		cs, err := h.s.Children(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		a, sb := cs[0], cs[1]
		if a.ID != "a" || a.State != supervisor.StateStopped || a.Incarnation != 0 || a.Restarts != 1 || a.LastErr != nil || a.Restart != supervisor.Transient {
			t.Fatalf("a: %+v", a)
		}
		if sb.ID != "sub" || sb.Type != supervisor.TypeSupervisor || sb.State != supervisor.StateRunning || sb.Incarnation == 0 {
			t.Fatalf("sub: %+v", sb)
		}
		h.stop()
	})
}

// A hook that blocks or panics never blocks the supervisor; what does not
// fit is dropped and counted.
func TestEventHookCannotBlock(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		release := make(chan struct{})
		var calls atomic.Int64
		hook := func(e supervisor.Event) {
			if calls.Add(1) == 1 {
				<-release
			}
			if e.Kind == supervisor.EventExited {
				panic("hook panic")
			}
		}
		s := h.start(supervisor.Config{EventHook: hook, EventBuffer: 4, Intensity: 1000, Period: time.Hour, MinUptime: -1}, h.spec("a"))
		for i := 0; i < 50; i++ {
			h.crash("a", errBoom)
		}
		wantLog(t, h.states(), "a:running")
		if d := s.DroppedEvents(); d < 50 {
			t.Fatalf("dropped %d", d)
		}
		close(release)
		h.stop()
		if d := s.DroppedEvents(); d < 50+1 { // plus at least one panicking delivery
			t.Fatalf("dropped %d", d)
		}
	})
}

// An EventFilter keeps what it refuses out of the queue (not dropped, not delivered), sees
// each event once with its supervisor named, passes on what it panics on, and a nested
// supervisor that inherits the hook inherits the filter.
func TestEventFilter(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		var seen atomic.Int64
		filter := func(e supervisor.Event) bool {
			seen.Add(1)
			if e.Supervisor == "" || !e.Time.IsZero() {
				t.Errorf("filter saw %+v: want the supervisor named, no time yet", e)
			}
			switch e.Kind {
			case supervisor.EventRestarting:
				panic("filter panic")
			case supervisor.EventExited:
				return true
			}
			return false
		}
		sub := supervisor.Subtree("sub", supervisor.Config{}, h.spec("x"))
		s := h.start(supervisor.Config{EventFilter: filter, Intensity: 100, Period: time.Hour}, h.spec("a"), sub)
		h.takeEvents()
		h.crash("a", errBoom)
		h.crash("x", errBoom)
		wantLog(t, h.states(), "a:running", "sub:running")
		got := kinds(h.takeEvents())
		want := []string{"exited a", "restarting a", "exited x", "restarting x"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("delivered %q, want %q (the started events refused)", got, want)
		}
		if seen.Load() < int64(len(want)+2) {
			t.Fatalf("the filter saw %d events, want the two started events too", seen.Load())
		}
		if d := s.DroppedEvents(); d != 0 {
			t.Fatalf("%d dropped: a refused event is not a dropped one", d)
		}
		h.stop()
	})
}

// Dependencies: b needs a, c needs b, d is independent. A restart of a
// restarts exactly b and c (stopped in reverse, started in order).
func TestDependencies(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		var aRunning atomic.Bool
		h.mu.Lock()
		h.startCtx["b"] = func(context.Context) error {
			if !aRunning.Load() {
				return errors.New("b started before a was ready")
			}
			return nil
		}
		h.mu.Unlock()
		a := h.spec("a")
		inner := a.Start
		a.Start = func(ctx context.Context) (supervisor.Child, error) {
			c, err := inner(ctx)
			aRunning.Store(err == nil)
			return c, err
		}
		s := h.start(supervisor.Config{}, a, h.spec("b", dependsOn("a")), h.spec("d"), h.spec("c", dependsOn("b")))
		h.takeLog()
		aRunning.Store(false)
		h.crash("a", errBoom)
		wantLog(t, h.takeLog(), "stop c", "stop b", "start a", "start b", "start c")
		h.crash("b", errBoom)
		wantLog(t, h.takeLog(), "stop c", "start b", "start c")
		h.crash("c", errBoom)
		wantLog(t, h.takeLog(), "start c")
		// Terminating a dependency stops its dependents first.
		if err := s.TerminateChild(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		wantLog(t, h.takeLog(), "stop c", "stop b", "stop a")
		if _, err := s.RestartChild(ctx, "b"); !errors.Is(err, supervisor.ErrDependency) {
			t.Fatalf("RestartChild b: %v", err)
		}
		if err := s.DeleteChild(ctx, "a"); !errors.Is(err, supervisor.ErrDependency) {
			t.Fatalf("DeleteChild a: %v", err)
		}
		for _, id := range []string{"a", "b", "c"} {
			if _, err := s.RestartChild(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		// A transient dependency that exits normally takes its dependents down.
		if _, err := s.StartChild(ctx, h.spec("t", transient)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartChild(ctx, h.spec("u", dependsOn("t", "a"))); err != nil {
			t.Fatal(err)
		}
		h.takeLog()
		h.crash("t", nil)
		wantLog(t, h.takeLog(), "stop u")
		wantLog(t, h.states(), "a:running", "b:running", "d:running", "c:running", "t:stopped", "u:stopped")
		h.stop()
	})
}

func TestDynamic(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		s := h.start(supervisor.Config{Strategy: supervisor.Dynamic, MaxChildren: 3})
		var hs []supervisor.Handle
		for i := 0; i < 3; i++ {
			hd, err := s.StartChild(ctx, h.spec("", transient))
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, hd)
		}
		if hs[0].ID() == hs[1].ID() || hs[0].ID() == "" {
			t.Fatalf("generated IDs %q %q", hs[0].ID(), hs[1].ID())
		}
		if _, err := s.StartChild(ctx, h.spec("")); !errors.Is(err, supervisor.ErrMaxChildren) {
			t.Fatalf("4th child: %v", err)
		}
		// A child that is not restarted is removed, freeing a slot.
		h.crash("", nil) // the last started one
		if cs, _ := s.Children(ctx); len(cs) != 2 {
			t.Fatalf("%d children", len(cs))
		}
		if _, err := s.StartChild(ctx, h.spec("", transient)); err != nil {
			t.Fatal(err)
		}
		if err := hs[0].Terminate(ctx); err != nil {
			t.Fatal(err)
		}
		if cs, _ := s.Children(ctx); len(cs) != 2 {
			t.Fatalf("%d children after terminate", len(cs))
		}
		h.stop()
	})
}

// Dynamic children stop concurrently: the shutdown takes one timeout, not
// one per child.
func TestDynamicConcurrentShutdown(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		h.setOnStop("", func(*fakeChild) {}) // every child ignores Stop
		s := h.start(supervisor.Config{Strategy: supervisor.Dynamic})
		for i := 0; i < 10; i++ {
			if _, err := s.StartChild(ctx, h.spec("", func(sp *supervisor.Spec) { sp.Shutdown = time.Second })); err != nil {
				t.Fatal(err)
			}
		}
		go s.Stop(ctx)
		synctest.Wait()
		h.clk.Advance(time.Second)
		<-s.Done()
		n := 0
		for _, e := range h.takeEvents() {
			if e.Kind == supervisor.EventShutdownError {
				n++
			}
		}
		if n != 10 {
			t.Fatalf("%d shutdown errors", n)
		}
	})
}

// 10,000 dynamic children: each starts once and stops once, and the supervisor lists them all.
func TestTenThousandDynamicChildren(t *testing.T) {
	// No bound on its duration: speed is BenchmarkDynamic10k's to measure. The context only
	// bounds a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := supervisor.New(supervisor.Config{Strategy: supervisor.Dynamic})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var started, stopped atomic.Int64
	run := supervisor.Func(func(ctx context.Context, ready func()) error {
		started.Add(1)
		ready()
		<-ctx.Done()
		stopped.Add(1)
		return ctx.Err()
	})
	for i := 0; i < 10000; i++ {
		if _, err := s.StartChild(ctx, supervisor.Spec{Start: run}); err != nil {
			t.Fatal(err)
		}
	}
	if n := started.Load(); n != 10000 { // StartChild returns once the child is ready
		t.Fatalf("%d children started, want 10,000", n)
	}
	cs, err := s.Children(ctx)
	if err != nil || len(cs) != 10000 {
		t.Fatalf("%d children, %v", len(cs), err)
	}
	if n := stopped.Load(); n != 0 {
		t.Fatalf("%d children stopped before Stop", n)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := stopped.Load(); n != 10000 { // Stop returns once every child has ended
		t.Fatalf("%d children stopped, want 10,000", n)
	}
	if n := started.Load(); n != 10000 {
		t.Fatalf("%d children started in all, want 10,000 (a restart?)", n)
	}
}

func TestFunc(t *testing.T) {
	ctx := context.Background()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var got []string
		var runs atomic.Int64
		start := supervisor.Func(func(ctx context.Context, ready func()) error {
			n := runs.Add(1)
			ready()
			if n == 1 {
				panic("first run panics")
			}
			<-ctx.Done()
			return ctx.Err() // a clean stop
		})
		s, _ := supervisor.New(supervisor.Config{EventHook: func(e supervisor.Event) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%v %v", e.Kind, e.Class))
			mu.Unlock()
		}}, supervisor.Spec{ID: "f", Start: start})
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		wantLog(t, got, "started normal", "exited abnormal", "restarting normal", "started normal", "stopped shutdown")
		// An error before ready is a start failure; ErrIgnore skips.
		_, err := supervisor.Func(func(context.Context, func()) error { return errBoom })(ctx)
		wantErr(t, err, errBoom)
		_, err = supervisor.Func(func(context.Context, func()) error { return supervisor.ErrIgnore })(ctx)
		wantErr(t, err, supervisor.ErrIgnore)
	})
}

func TestTasks(t *testing.T) {
	ctx := context.Background()
	bubble(t, func(t *testing.T, h *harness) {
		g := h.start(supervisor.Config{Strategy: supervisor.Dynamic, Intensity: 10})
		ok, err := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(context.Context) (int, error) { return 42, nil })
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ok.Wait(ctx); v != 42 || err != nil {
			t.Fatalf("Wait: %v %v", v, err)
		}
		failed, _ := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(context.Context) (int, error) { return 0, errBoom })
		if _, err := failed.Wait(ctx); !errors.Is(err, errBoom) {
			t.Fatalf("temporary task: %v", err)
		}
		var tries atomic.Int64
		retried, _ := supervisor.Go(ctx, g, supervisor.TaskOptions{Retry: true, Backoff: supervisor.Backoff{Initial: time.Second}},
			func(context.Context) (string, error) {
				if tries.Add(1) < 3 {
					return "", errBoom
				}
				return "done", nil
			})
		for i := 0; i < 2; i++ {
			synctest.Wait()
			h.clk.Advance(time.Hour)
		}
		if v, err := retried.Wait(ctx); v != "done" || err != nil || tries.Load() != 3 {
			t.Fatalf("retried: %q %v after %d tries", v, err, tries.Load())
		}
		cancelled, _ := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() })
		if err := cancelled.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cancelled.Wait(ctx); !errors.Is(err, supervisor.ErrShutdown) {
			t.Fatalf("cancelled: %v", err)
		}
		// Stopping the group completes every waiting caller.
		pending, _ := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() })
		backingOff, _ := supervisor.Go(ctx, g, supervisor.TaskOptions{Retry: true, Backoff: supervisor.Backoff{Initial: time.Hour}},
			func(context.Context) (int, error) { return 0, errBoom })
		synctest.Wait()
		h.stop()
		if _, err := pending.Wait(ctx); !errors.Is(err, supervisor.ErrShutdown) {
			t.Fatalf("pending: %v", err)
		}
		if _, err := backingOff.Wait(ctx); !errors.Is(err, supervisor.ErrShutdown) {
			t.Fatalf("backing off: %v", err)
		}
		if _, err := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(context.Context) (int, error) { return 0, nil }); !errors.Is(err, supervisor.ErrStopped) {
			t.Fatalf("Go after stop: %v", err)
		}
	})
}

// A Func child that is ready when its start's context ends is started, not aborted: both are
// ready for the start's select, which must take ready, or the child would be stopped out of
// turn (Example_oneForOne once printed "stop b" before "stop c" under load). lateCtx's Done
// waits until the child has called ready, so that the select finds both ready every time;
// without the fix, select's random choice fails about half of the runs.
func TestFuncReadyBeatsCancelledStart(t *testing.T) {
	for i := range 100 {
		readied := make(chan struct{})
		ctx := lateCtx{Context: context.Background(), readied: readied, done: make(chan struct{})}
		close(ctx.done)
		start := supervisor.Func(func(cctx context.Context, ready func()) error {
			ready()
			close(readied)
			<-cctx.Done()
			return cctx.Err()
		})
		c, err := start(ctx)
		if err != nil {
			t.Fatalf("run %d: a ready child's start failed: %v", i, err)
		}
		select {
		case <-c.Done():
			t.Fatalf("run %d: the started child was stopped", i)
		default:
		}
		c.Stop()
		<-c.Done()
	}
}

// lateCtx is a cancelled context whose Done blocks until readied is closed.
type lateCtx struct {
	context.Context
	readied <-chan struct{}
	done    chan struct{}
}

func (c lateCtx) Done() <-chan struct{} { <-c.readied; return c.done }
func (c lateCtx) Err() error            { return context.Canceled }
