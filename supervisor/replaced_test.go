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

var errCallerGone = errors.New("caller went away")

// A child that exits Replaced is restarted at once, however often, without spending the
// intensity, the slow-cycle count or the backoff; a real crash afterwards is judged as if
// the replacements had not happened.
func TestReplacedExitIsNotCounted(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{Intensity: 1, Period: time.Minute},
			h.spec("a", func(sp *supervisor.Spec) { sp.Backoff = supervisor.Backoff{Initial: time.Second} }),
			h.spec("b", dependsOn("a")))
		h.takeLog()
		h.takeEvents()
		for range 100 {
			h.crash("a", supervisor.Replaced{Reason: errCallerGone})
		}
		wantLog(t, h.states(), "a:running", "b:running")
		if ci := h.info("a"); ci.Restarts != 100 || ci.Replaced != 100 || !errors.Is(ci.LastErr, errCallerGone) {
			t.Fatalf("child a: %+v", ci)
		}
		for _, e := range h.takeEvents() {
			switch {
			case e.Kind == supervisor.EventBackoff, e.Kind == supervisor.EventMaxIntensity:
				t.Fatalf("event %v after a replacement", e.Kind)
			case e.Kind == supervisor.EventExited && e.Class != supervisor.ExitReplaced:
				t.Fatalf("exit class %v", e.Class)
			}
		}
		// The replacement restarts the dependents too: it is a restart for the strategy.
		log := h.takeLog()
		if len(log) != 300 || log[0] != "stop b" || log[1] != "start a" || log[2] != "start b" {
			t.Fatalf("log %v…", log[:min(len(log), 6)])
		}

		// The first crash is the first restart counted (allowed, with the first backoff step);
		// the second exceeds intensity 1.
		h.crash("a", errBoom)
		wantLog(t, h.states(), "a:backoff", "b:restarting")
		h.clk.Advance(time.Second)
		synctest.Wait()
		wantLog(t, h.states(), "a:running", "b:running")
		h.crash("a", errBoom)
		<-s.Done()
		wantErr(t, s.Err(), supervisor.ErrMaxIntensity)
	})
}

// Transient children are restarted after a replacement (it is not their normal end);
// Temporary children are not (they are never restarted).
func TestReplacedByRestartType(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.start(supervisor.Config{Intensity: supervisor.NoRestarts},
			h.spec("transient", transient), h.spec("temporary", temporary))
		h.takeLog()
		h.crash("transient", supervisor.ErrReplaced)
		h.crash("temporary", supervisor.Replaced{})
		wantLog(t, h.takeLog(), "start transient")
		wantLog(t, h.states(), "transient:running")
		h.stop()
	})
}

// A child that ends Replaced while its supervisor stops it has ended cleanly.
func TestReplacedDuringStop(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.setOnStop("a", func(c *fakeChild) { c.exit(supervisor.Replaced{Reason: errCallerGone}) })
		h.start(supervisor.Config{}, h.spec("a"))
		h.takeEvents()
		h.stop()
		for _, e := range h.takeEvents() {
			if e.Kind == supervisor.EventShutdownError {
				t.Fatalf("shutdown error: %v", e.Err)
			}
		}
	})
}

func TestClassifyReplaced(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want supervisor.ExitClass
	}{
		{supervisor.ErrReplaced, supervisor.ExitReplaced},
		{supervisor.Replaced{}, supervisor.ExitReplaced},
		{supervisor.Replaced{Reason: context.Canceled}, supervisor.ExitReplaced},
		{fmt.Errorf("x: %w", supervisor.Replaced{Reason: supervisor.ErrShutdown}), supervisor.ExitReplaced},
		{&supervisor.IntensityError{Err: supervisor.ErrReplaced}, supervisor.ExitAbnormal},
	} {
		if got := supervisor.Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if s := supervisor.ExitReplaced.String(); s != "replaced" {
		t.Errorf("String %q", s)
	}
	if !errors.Is(supervisor.Replaced{Reason: errCallerGone}, errCallerGone) {
		t.Error("Replaced does not unwrap to its reason")
	}
}
