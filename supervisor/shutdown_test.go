package supervisor_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// OTP sup_stop_race: every restart type × how the child ends while being
// stopped. ErrShutdown is clean; a normal exit or Shutdown{T} is clean
// unless the child is Permanent; a crash is a shutdown error. Nothing is
// restarted and the shutdown carries on.
func TestStopRaceMatrix(t *testing.T) {
	types := []supervisor.RestartType{supervisor.Permanent, supervisor.Transient, supervisor.Temporary}
	for _, rt := range types {
		for _, rs := range reasons {
			if rs.name == "ErrNormal" {
				continue
			}
			t.Run(rt.String()+"/"+rs.name, func(t *testing.T) {
				bubble(t, func(t *testing.T, h *harness) {
					h.setOnStop("a", func(c *fakeChild) { c.exit(rs.err) })
					h.start(supervisor.Config{}, h.spec("a", func(sp *supervisor.Spec) { sp.Restart = rt }), h.spec("b"))
					h.takeLog()
					h.takeEvents()
					h.stop()
					wantLog(t, h.takeLog(), "stop b", "stop a")
					want := supervisor.EventStopped
					switch {
					case errors.Is(rs.err, supervisor.ErrShutdown) && rs.err == supervisor.ErrShutdown: //nolint:errorlint // the bare sentinel
					case supervisor.Classify(rs.err) == supervisor.ExitAbnormal, rt == supervisor.Permanent:
						want = supervisor.EventShutdownError
					}
					evs := h.takeEvents()
					if len(evs) != 2 || evs[1].Child != "a" || evs[1].Kind != want || !errors.Is(evs[1].Err, rs.err) {
						t.Fatalf("events %v, want %v for a", kinds(evs), want)
					}
				})
			})
		}
	}
}

func TestShutdownTimeoutThenKill(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.setOnStop("slow", func(*fakeChild) {}) // ignores Stop
		h.start(supervisor.Config{},
			h.spec("brutal", func(sp *supervisor.Spec) { sp.Shutdown = supervisor.BrutalKill }),
			h.spec("slow", func(sp *supervisor.Spec) { sp.Shutdown = 2 * time.Second }),
			h.spec("c"))
		h.takeLog()
		h.takeEvents()
		done := make(chan error, 1)
		go func() { done <- h.s.Stop(context.Background()) }()
		synctest.Wait()
		wantLog(t, h.takeLog(), "stop c", "stop slow")
		h.clk.Advance(2*time.Second - 1)
		synctest.Wait()
		wantLog(t, h.takeLog())
		h.clk.Advance(1)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wantLog(t, h.takeLog(), "kill slow", "kill brutal")
		evs := h.takeEvents()
		wantLog(t, kinds(evs), "stopped c", "shutdown_error slow", "stopped brutal")
		if !errors.Is(evs[1].Err, supervisor.ErrKilled) || !errors.Is(evs[2].Err, supervisor.ErrKilled) {
			t.Fatalf("events %+v", evs)
		}
	})
}

func TestKillSupervisor(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		sub := supervisor.Subtree("sub", supervisor.Config{}, h.spec("x"), h.spec("y"))
		s := h.start(supervisor.Config{}, h.spec("a"), sub)
		h.takeLog()
		s.Kill()
		<-s.Done()
		wantLog(t, h.takeLog(), "kill y", "kill x", "kill a")
		wantErr(t, s.Err(), supervisor.ErrKilled)
	})
}

func TestStopRaces(t *testing.T) {
	ctx := context.Background()
	t.Run("before start", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.build(supervisor.Config{}, h.spec("a"))
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			wantErr(t, s.Start(ctx), supervisor.ErrStopped)
			if _, err := s.StartChild(ctx, h.spec("b")); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatal(err)
			}
			wantLog(t, h.takeLog())
		})
	})
	t.Run("calls before start", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.build(supervisor.Config{}, h.spec("a"))
			if _, err := s.Children(ctx); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatal(err)
			}
		})
	})
	t.Run("during start", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			h.mu.Lock()
			h.startCtx["b"] = func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) }
			h.mu.Unlock()
			s := h.build(supervisor.Config{}, h.spec("a"), h.spec("b"))
			errc := make(chan error, 1)
			go func() { errc <- s.Start(ctx) }()
			synctest.Wait()
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			wantErr(t, <-errc, supervisor.ErrStopped)
			wantLog(t, h.takeLog(), "start a", "start b failed", "stop a")
		})
	})
	t.Run("right after start", func(t *testing.T) { // suture#35
		bubble(t, func(t *testing.T, h *harness) {
			s := h.build(supervisor.Config{}, h.spec("a"))
			go s.Start(ctx)
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("start ctx cancelled", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			h.mu.Lock()
			h.startCtx["b"] = func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) }
			h.mu.Unlock()
			s := h.build(supervisor.Config{}, h.spec("a"), h.spec("b"))
			cctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() { errc <- s.Start(cctx) }()
			synctest.Wait()
			cancel()
			wantErr(t, <-errc, context.Canceled)
			<-s.Done()
			wantLog(t, h.takeLog(), "start a", "start b failed", "stop a")
		})
	})
	t.Run("during restart", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{}, h.spec("a"), h.spec("b"))
			h.mu.Lock()
			h.startCtx["a"] = func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) }
			h.mu.Unlock()
			h.crash("a", errBoom) // the loop now blocks in a's Start
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			wantErr(t, s.Err(), supervisor.ErrShutdown)
		})
	})
	t.Run("twice and concurrently", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{}, h.spec("a"))
			errs := make(chan error, 3)
			for i := 0; i < 3; i++ {
				go func() { errs <- s.Stop(ctx) }()
			}
			for i := 0; i < 3; i++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			wantLog(t, h.takeLog(), "start a", "stop a")
		})
	})
	t.Run("calls after stop", func(t *testing.T) { // suture#41
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{}, h.spec("a"))
			h.stop()
			if _, err := s.StartChild(ctx, h.spec("b")); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatal(err)
			}
			if err := s.TerminateChild(ctx, "a"); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatal(err)
			}
			if _, err := s.Lookup(ctx, "a"); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatal(err)
			}
		})
	})
	t.Run("stop ctx expires", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			h.setOnStop("a", func(*fakeChild) {})
			s := h.start(supervisor.Config{}, h.spec("a", func(sp *supervisor.Spec) { sp.Shutdown = supervisor.Infinity }))
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			wantErr(t, s.Stop(sctx), context.DeadlineExceeded)
			h.crash("a", supervisor.ErrShutdown)
			<-s.Done()
		})
	})
	t.Run("a child calling its own supervisor fails, not hangs", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{}, h.spec("a"))
			// A call made while the supervisor stops returns ErrStopped.
			h.setOnStop("a", func(c *fakeChild) {
				go func() {
					_, err := s.StartChild(ctx, h.spec("z"))
					c.exit(err)
				}()
			})
			h.crash("a", errBoom) // new incarnation picks up onStop
			h.stop()
			if i := h.takeEvents(); !errors.Is(i[len(i)-1].Err, supervisor.ErrStopped) {
				t.Fatalf("last event %+v", i[len(i)-1])
			}
		})
	})
}
