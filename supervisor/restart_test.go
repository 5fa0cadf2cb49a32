package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

var reasons = []struct {
	name string
	err  error
}{
	{"nil", nil},
	{"ErrNormal", supervisor.ErrNormal},
	{"ErrShutdown", supervisor.ErrShutdown},
	{"Shutdown{T}", supervisor.Shutdown{Reason: errors.New("test")}},
	{"abnormal", errBoom},
}

// TestRestartMatrix is OTP's normal_, shutdown_ and abnormal_termination
// groups: restart type × exit reason; for children the supervisor watches with a
// goroutine, and for Notifiers, which tell it themselves.
func TestRestartMatrix(t *testing.T) {
	types := []supervisor.RestartType{supervisor.Permanent, supervisor.Transient, supervisor.Temporary}
	for _, notify := range []bool{false, true} {
		for _, rt := range types {
			for _, rs := range reasons {
				t.Run(fmt.Sprintf("notify=%v/%s/%s", notify, rt, rs.name), func(t *testing.T) {
					restartCase(t, notify, rt, rs.err)
				})
			}
		}
	}
}

func restartCase(t *testing.T, notify bool, rt supervisor.RestartType, reason error) {
	rs := struct{ err error }{reason}
	bubble(t, func(t *testing.T, h *harness) {
		h.notify = notify
		h.start(supervisor.Config{}, h.spec("a", func(sp *supervisor.Spec) { sp.Restart = rt }))
		h.takeLog()
		h.crash("a", rs.err)
		class := supervisor.Classify(rs.err)
		restarted := rt == supervisor.Permanent || (rt == supervisor.Transient && class == supervisor.ExitAbnormal)
		got := h.states()
		switch {
		case restarted:
			wantLog(t, h.takeLog(), "start a")
			wantLog(t, got, "a:running")
		case rt == supervisor.Temporary:
			wantLog(t, h.takeLog())
			wantLog(t, got) // the spec is removed
		default:
			wantLog(t, h.takeLog())
			wantLog(t, got, "a:stopped")
		}
		evs := h.takeEvents()
		var exited *supervisor.Event
		for i := range evs {
			if evs[i].Kind == supervisor.EventExited {
				exited = &evs[i]
			}
		}
		if exited == nil || exited.Class != class || !errors.Is(exited.Err, rs.err) {
			t.Fatalf("exited event %+v, want class %v", exited, class)
		}
		h.stop()
	})
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want supervisor.ExitClass
	}{
		{nil, supervisor.ExitNormal},
		{supervisor.ErrNormal, supervisor.ExitNormal},
		{fmt.Errorf("x: %w", supervisor.ErrNormal), supervisor.ExitNormal},
		{supervisor.ErrShutdown, supervisor.ExitShutdown},
		{supervisor.Shutdown{}, supervisor.ExitShutdown},
		{fmt.Errorf("wrapped: %w", supervisor.Shutdown{Reason: errBoom}), supervisor.ExitShutdown},
		{supervisor.ErrKilled, supervisor.ExitAbnormal},
		{errBoom, supervisor.ExitAbnormal},
		{context.Canceled, supervisor.ExitAbnormal},
		{&supervisor.IntensityError{Err: supervisor.ErrShutdown}, supervisor.ExitAbnormal},
	}
	for _, tt := range tests {
		if got := supervisor.Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// Each strategy with a crash of b among a, b, c, plus a temporary and a
// transient bystander (OTP temporary_bystander).
func TestStrategies(t *testing.T) {
	tests := []struct {
		strategy supervisor.Strategy
		crash    string
		log      []string
		states   []string
	}{
		{
			strategy: supervisor.OneForOne, crash: "b",
			log:    []string{"start b"},
			states: []string{"a:running", "b:running", "tmp:running", "tr:running", "c:running"},
		},
		{
			strategy: supervisor.OneForAll, crash: "b",
			log:    []string{"stop c", "stop tr", "stop tmp", "stop a", "start a", "start b", "start tr", "start c"},
			states: []string{"a:running", "b:running", "tr:running", "c:running"},
		},
		{
			strategy: supervisor.RestForOne, crash: "b",
			log:    []string{"stop c", "stop tr", "stop tmp", "start b", "start tr", "start c"},
			states: []string{"a:running", "b:running", "tr:running", "c:running"},
		},
		{
			strategy: supervisor.RestForOne, crash: "c",
			log:    []string{"start c"},
			states: []string{"a:running", "b:running", "tmp:running", "tr:running", "c:running"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.strategy.String()+"/"+tt.crash, func(t *testing.T) {
			bubble(t, func(t *testing.T, h *harness) {
				h.start(supervisor.Config{Strategy: tt.strategy},
					h.spec("a"), h.spec("b"), h.spec("tmp", temporary), h.spec("tr", transient), h.spec("c"))
				wantLog(t, h.takeLog(), "start a", "start b", "start tmp", "start tr", "start c")
				h.crash(tt.crash, errBoom)
				wantLog(t, h.takeLog(), tt.log...)
				wantLog(t, h.states(), tt.states...)
				h.stop()
				wantLog(t, h.takeLog(), reverseStops(tt.states)...)
			})
		})
	}
}

func reverseStops(states []string) []string {
	var out []string
	for i := len(states) - 1; i >= 0; i-- {
		id := states[i][:len(states[i])-len(":running")]
		out = append(out, "stop "+id)
	}
	return out
}

// A sibling-caused termination of a significant child does not trigger an
// automatic shutdown; its own exit does.
func TestAutoShutdown(t *testing.T) {
	sig := func(sp *supervisor.Spec) { sp.Significant = true; sp.Restart = supervisor.Transient }
	t.Run("bystander", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{Strategy: supervisor.OneForAll, AutoShutdown: supervisor.AnySignificant},
				h.spec("a"), h.spec("s", sig))
			h.crash("a", errBoom)
			wantLog(t, h.states(), "a:running", "s:running")
			if err := s.TerminateChild(context.Background(), "s"); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			wantLog(t, h.states(), "a:running", "s:stopped")
			h.stop()
		})
	})
	t.Run("any", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{AutoShutdown: supervisor.AnySignificant},
				h.spec("a"), h.spec("s1", sig), h.spec("s2", sig))
			h.takeLog()
			h.crash("s1", nil)
			<-s.Done()
			wantLog(t, h.takeLog(), "stop s2", "stop a")
			if supervisor.Classify(s.Err()) != supervisor.ExitShutdown {
				t.Fatalf("exit %v, want a shutdown", s.Err())
			}
		})
	})
	t.Run("all", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{AutoShutdown: supervisor.AllSignificant},
				h.spec("a"), h.spec("s1", sig), h.spec("s2", sig))
			h.takeLog()
			h.crash("s1", nil)
			h.crash("s2", errBoom) // restarted: still alive
			wantLog(t, h.states(), "a:running", "s1:stopped", "s2:running")
			h.crash("s2", supervisor.ErrShutdown)
			<-s.Done()
			wantLog(t, h.takeLog(), "start s2", "stop a")
		})
	})
}

// Failure at child k stops children k-1…1 in reverse and returns a
// *StartError naming k (first, middle and last position).
func TestStartFailure(t *testing.T) {
	for _, failing := range []string{"a", "b", "c"} {
		t.Run(failing, func(t *testing.T) {
			bubble(t, func(t *testing.T, h *harness) {
				h.failStart(failing, errBoom)
				s := h.build(supervisor.Config{}, h.spec("a"), h.spec("b"), h.spec("c"))
				err := s.Start(context.Background())
				var se *supervisor.StartError
				if !errors.As(err, &se) || se.ID != failing || !errors.Is(err, errBoom) {
					t.Fatalf("Start: %v", err)
				}
				<-s.Done()
				want := map[string][]string{
					"a": {"start a failed"},
					"b": {"start a", "start b failed", "stop a"},
					"c": {"start a", "start b", "start c failed", "stop b", "stop a"},
				}[failing]
				wantLog(t, h.takeLog(), want...)
				if err := s.Start(context.Background()); !errors.Is(err, supervisor.ErrStopped) {
					t.Fatalf("second Start: %v", err)
				}
			})
		})
	}
}

// OTP sup_start_ignore_*: an ignored child is kept without an incarnation,
// a Temporary one is dropped.
func TestIgnore(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.failStart("p", supervisor.ErrIgnore)
		h.failStart("t", supervisor.ErrIgnore)
		s := h.start(supervisor.Config{}, h.spec("p"), h.spec("t", temporary), h.spec("c"))
		wantLog(t, h.states(), "p:stopped", "c:running")
		hd, err := s.StartChild(context.Background(), func() supervisor.Spec { h.failStart("d", supervisor.ErrIgnore); return h.spec("d") }())
		if err != nil || hd.Incarnation() != 0 {
			t.Fatalf("StartChild ignored: %v %v", hd, err)
		}
		wantLog(t, h.states(), "p:stopped", "c:running", "d:stopped")
		if _, err := s.RestartChild(context.Background(), "p"); err != nil {
			t.Fatal(err)
		}
		wantLog(t, h.states(), "p:running", "c:running", "d:stopped")
		h.stop()
	})
}

// A dynamically added child goes last in start order and is stopped first
// (OTP order_of_children).
func TestOrderOfChildren(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Strategy: supervisor.RestForOne}, h.spec("a"), h.spec("b"))
		if _, err := s.StartChild(context.Background(), h.spec("x")); err != nil {
			t.Fatal(err)
		}
		h.takeLog()
		h.crash("b", errBoom)
		wantLog(t, h.takeLog(), "stop x", "start b", "start x")
		h.stop()
		wantLog(t, h.takeLog(), "stop x", "stop b", "stop a")
	})
}

// OTP hanging_restart_loop: a child whose restart keeps failing is retried
// as a message; meanwhile the supervisor answers calls, and TerminateChild
// ends the retries.
func TestRestartFailureLoop(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Intensity: 1 << 30, Period: time.Hour, MinUptime: -1}, h.spec("a"), h.spec("b"))
		ctx := context.Background()
		h.mu.Lock()
		h.startCtx["a"] = func(context.Context) error { return errBoom } // every restart fails
		h.mu.Unlock()
		h.mu.Lock()
		h.cur["a"].exit(errBoom)
		h.mu.Unlock()
		// The loop is busy retrying; calls still get through.
		var st supervisor.State
		for st != supervisor.StateRestarting {
			cs, err := s.Children(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st = cs[0].State
		}
		if _, err := s.RestartChild(ctx, "a"); !errors.Is(err, supervisor.ErrRestarting) {
			t.Fatalf("RestartChild: %v", err)
		}
		if err := s.DeleteChild(ctx, "a"); !errors.Is(err, supervisor.ErrRestarting) {
			t.Fatalf("DeleteChild: %v", err)
		}
		if _, err := s.StartChild(ctx, h.spec("a")); !errors.Is(err, supervisor.ErrAlreadyPresent) {
			t.Fatalf("StartChild: %v", err)
		}
		if err := s.TerminateChild(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // no more retries: the bubble goes idle
		wantLog(t, h.states(), "a:stopped", "b:running")
		if i := h.info("a"); !errors.Is(i.LastErr, errBoom) {
			t.Fatalf("LastErr %v", i.LastErr)
		}
		h.stop()
	})
}

// OTP *_other_child_fails_restart: under one_for_all, a sibling failing to
// restart makes the retry run the whole strategy again.
func TestOneForAllOtherChildFailsRestart(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.start(supervisor.Config{Strategy: supervisor.OneForAll}, h.spec("a"), h.spec("b"), h.spec("c"))
		h.takeLog()
		h.failStart("b", errBoom)
		h.crash("c", errBoom)
		wantLog(t, h.takeLog(),
			"stop b", "stop a", "start a", "start b failed", // c left unstarted
			"stop a", "start a", "start b", "start c") // the retry
		wantLog(t, h.states(), "a:running", "b:running", "c:running")
		h.stop()
	})
}

func TestStartTimeout(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.mu.Lock()
		h.startCtx["a"] = func(ctx context.Context) error { <-ctx.Done(); return context.Cause(ctx) }
		h.mu.Unlock()
		s := h.build(supervisor.Config{}, h.spec("a", func(sp *supervisor.Spec) { sp.StartTimeout = time.Second }))
		errc := make(chan error, 1)
		go func() { errc <- s.Start(context.Background()) }()
		synctest.Wait()
		h.clk.Advance(time.Second)
		err := <-errc
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Start: %v", err)
		}
	})
}
