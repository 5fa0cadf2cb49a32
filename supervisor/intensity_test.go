package supervisor_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Intensity 2 in a 10 s window: the boundary is inclusive, with Duration
// precision (no whole-second truncation).
func TestIntensityWindowBoundary(t *testing.T) {
	for _, tt := range []struct {
		name  string
		third time.Duration // when the third crash happens, after the first
		trips bool
	}{
		{"inside", 10*time.Second - 1, true},
		{"exactly Period", 10 * time.Second, true},
		{"just outside", 10*time.Second + 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T, h *harness) {
				s := h.start(supervisor.Config{Intensity: 2, Period: 10 * time.Second, MinUptime: -1}, h.spec("a"), h.spec("b"))
				h.crash("a", errBoom)
				h.crash("b", errBoom)
				h.clk.Advance(tt.third)
				h.crash("a", errBoom)
				select {
				case <-s.Done():
					if !tt.trips {
						t.Fatalf("tripped: %v", s.Err())
					}
					var ie *supervisor.IntensityError
					if !errors.As(s.Err(), &ie) || ie.Child != "a" || ie.Restarts != 3 || ie.SlowCycle {
						t.Fatalf("exit %#v", s.Err())
					}
				default:
					if tt.trips {
						t.Fatal("did not trip")
					}
					h.stop()
				}
			})
		})
	}
}

// NoRestarts: the first restart ends the supervisor, its other children
// stopped in reverse order, and the error names the child.
func TestIntensityZero(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Intensity: supervisor.NoRestarts}, h.spec("a"), h.spec("b"), h.spec("c"))
		h.takeLog()
		h.crash("b", errBoom)
		<-s.Done()
		wantLog(t, h.takeLog(), "stop c", "stop a")
		var ie *supervisor.IntensityError
		if !errors.As(s.Err(), &ie) || ie.Child != "b" || !errors.Is(s.Err(), errBoom) {
			t.Fatalf("exit %v", s.Err())
		}
		var kinds []supervisor.EventKind
		for _, e := range h.takeEvents() {
			kinds = append(kinds, e.Kind)
		}
		if !containsKind(kinds, supervisor.EventMaxIntensity) {
			t.Fatalf("no max_intensity event: %v", kinds)
		}
		if _, err := s.Children(context.Background()); !errors.Is(err, supervisor.ErrStopped) {
			t.Fatalf("Children after exit: %v", err)
		}
	})
}

func containsKind(ks []supervisor.EventKind, k supervisor.EventKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// One crash counts once however many children it restarts.
func TestIntensityCountsOncePerCrash(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Strategy: supervisor.OneForAll, Intensity: 1}, h.spec("a"), h.spec("b"), h.spec("c"))
		h.crash("a", errBoom) // restarts 3 children: one restart
		wantLog(t, h.states(), "a:running", "b:running", "c:running")
		h.crash("c", errBoom)
		<-s.Done()
		wantErr(t, s.Err(), supervisor.ErrMaxIntensity)
	})
}

// The slow-cycle loophole: each cycle is longer than Period/Intensity, so
// the window never holds more than one restart. MinUptime catches it.
func TestSlowCycle(t *testing.T) {
	for _, tt := range []struct {
		name      string
		minUptime time.Duration
		uptime    time.Duration
		trips     bool
	}{
		{"quick crashes trip", 0, 2 * time.Second, true},
		{"rule disabled", -1, 2 * time.Second, false},
		{"long-lived incarnations", 0, 5 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T, h *harness) {
				s := h.start(supervisor.Config{Intensity: 3, Period: 5 * time.Second, MinUptime: tt.minUptime}, h.spec("a"))
				for i := 1; i <= 20; i++ {
					h.clk.Advance(tt.uptime)
					h.crash("a", errBoom)
					select {
					case <-s.Done():
						var ie *supervisor.IntensityError
						if !tt.trips || i != 4 || !errors.As(s.Err(), &ie) || !ie.SlowCycle {
							t.Fatalf("crash %d: exit %v", i, s.Err())
						}
						return
					default:
					}
				}
				if tt.trips {
					t.Fatal("20 slow cycles did not trip")
				}
				h.stop()
			})
		})
	}
}

// Intensities multiply across levels: root 2 over sub 2 lets a leaf crash
// (2+1)·(2+1) = 9 times before the root gives up; the error chain names
// every level.
func TestNestedEscalation(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		sub := supervisor.Subtree("sub", supervisor.Config{Intensity: 2}, h.spec("leaf"))
		s := h.start(supervisor.Config{Intensity: 2}, h.spec("a"), sub)
		crashes := 0
		for {
			select {
			case <-s.Done():
			default:
				crashes++
				h.crash("leaf", errBoom)
				continue
			}
			break
		}
		if crashes != 9 {
			t.Fatalf("root died after %d leaf crashes, want 9", crashes)
		}
		var root *supervisor.IntensityError
		if !errors.As(s.Err(), &root) || root.Child != "sub" || root.Supervisor != "root" {
			t.Fatalf("root exit %v", s.Err())
		}
		var leaf *supervisor.IntensityError
		if !errors.As(root.Err, &leaf) || leaf.Child != "leaf" || leaf.Supervisor != "root/sub" || !errors.Is(s.Err(), errBoom) {
			t.Fatalf("sub exit %v", root.Err)
		}
		// Nested events reach the root's hook.
		seen := map[string]bool{}
		for _, e := range h.takeEvents() {
			seen[e.Supervisor+" "+e.Kind.String()] = true
		}
		if !seen["root/sub max_intensity"] || !seen["root max_intensity"] {
			t.Fatalf("events %v", seen)
		}
	})
}

// The decision: a supervisor that reached its maximum intensity exits
// abnormally, so a Transient parent restarts it (OTP would not: escalation
// would be lost). One that shut down automatically is not restarted.
func TestTransientParentOfGivenUpSupervisor(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		sub := supervisor.Subtree("sub", supervisor.Config{Intensity: supervisor.NoRestarts}, h.spec("leaf"))
		sub.Restart = supervisor.Transient
		h.start(supervisor.Config{}, sub)
		h.takeLog()
		h.crash("leaf", errBoom)
		wantLog(t, h.takeLog(), "start leaf")
		wantLog(t, h.states(), "sub:running")
		if i := h.info("sub"); i.Restarts != 1 || !errors.Is(i.LastErr, supervisor.ErrMaxIntensity) {
			t.Fatalf("sub %+v", i)
		}
		h.stop()
	})
	bubble(t, func(t *testing.T, h *harness) {
		sig := h.spec("leaf", func(sp *supervisor.Spec) { sp.Significant = true; sp.Restart = supervisor.Transient })
		sub := supervisor.Subtree("sub", supervisor.Config{AutoShutdown: supervisor.AnySignificant}, sig)
		sub.Restart = supervisor.Transient
		h.start(supervisor.Config{}, sub)
		h.crash("leaf", nil)
		wantLog(t, h.states(), "sub:stopped")
		h.stop()
	})
}

func TestBackoff(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Intensity: 10, Period: time.Minute},
			h.spec("a", func(sp *supervisor.Spec) { sp.Backoff = supervisor.Backoff{Initial: time.Second, Max: 3 * time.Second} }),
			h.spec("b"))
		h.takeLog()
		h.takeEvents()
		for _, d := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
			h.crash("a", errBoom)
			wantLog(t, h.states(), "a:backoff", "b:running") // responsive while waiting
			h.crash("b", errBoom)                            // other children restart at once
			wantLog(t, h.takeLog(), "start b")
			h.clk.Advance(d - 1)
			synctest.Wait()
			wantLog(t, h.takeLog())
			h.clk.Advance(1)
			synctest.Wait()
			wantLog(t, h.takeLog(), "start a")
		}
		var delays []time.Duration
		for _, e := range h.takeEvents() {
			if e.Kind == supervisor.EventBackoff {
				delays = append(delays, e.Delay)
			}
		}
		wantLog(t, durations(delays), "1s", "2s", "3s")

		// Terminating a child that waits cancels the wait.
		h.crash("a", errBoom)
		if err := s.TerminateChild(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
		if n := h.clk.Pending(); n != 0 {
			t.Fatalf("%d timers pending after TerminateChild", n)
		}
		h.clk.Advance(time.Hour)
		synctest.Wait()
		wantLog(t, h.takeLog())
		wantLog(t, h.states(), "a:stopped", "b:running")

		// A stop during a backoff is clean and leaves no timer behind.
		if _, err := s.RestartChild(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
		h.crash("a", errBoom)
		h.stop()
		if n := h.clk.Pending(); n != 0 {
			t.Fatalf("%d timers pending after Stop", n)
		}
	})
}

func TestBackoffJitter(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.start(supervisor.Config{Intensity: 100, Period: time.Minute},
			h.spec("a", func(sp *supervisor.Spec) {
				sp.Backoff = supervisor.Backoff{Initial: time.Second, Max: time.Second, Jitter: 0.5}
			}))
		h.takeEvents()
		for i := 0; i < 20; i++ {
			h.crash("a", errBoom)
			h.clk.Advance(time.Hour)
			synctest.Wait()
		}
		for _, e := range h.takeEvents() {
			if e.Kind == supervisor.EventBackoff && (e.Delay < time.Second || e.Delay >= 1500*time.Millisecond) {
				t.Fatalf("delay %v outside [1s, 1.5s)", e.Delay)
			}
		}
		h.stop()
	})
}

func durations(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}
