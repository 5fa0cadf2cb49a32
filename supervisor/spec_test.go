package supervisor_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

func nopStart(context.Context) (supervisor.Child, error) { return nil, supervisor.ErrIgnore }

func TestSpecRejections(t *testing.T) {
	ok := func(id string) supervisor.Spec { return supervisor.Spec{ID: id, Start: nopStart} }
	with := func(id string, f func(*supervisor.Spec)) supervisor.Spec { sp := ok(id); f(&sp); return sp }
	tests := []struct {
		name  string
		cfg   supervisor.Config
		specs []supervisor.Spec
		field string
		is    error
	}{
		{name: "empty ID", specs: []supervisor.Spec{ok("")}, field: "ID"},
		{name: "nil Start", specs: []supervisor.Spec{{ID: "a"}}, field: "Start"},
		{name: "duplicate ID", specs: []supervisor.Spec{ok("a"), ok("a")}, field: "ID", is: supervisor.ErrDuplicateID},
		{name: "unknown restart type", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Restart = 9 })}, field: "Restart"},
		{name: "unknown child type", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Type = 9 })}, field: "Type"},
		{name: "negative shutdown", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Shutdown = -2 })}, field: "Shutdown"},
		{name: "negative start timeout", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.StartTimeout = -1 })}, field: "StartTimeout"},
		{
			name:  "significant permanent",
			cfg:   supervisor.Config{AutoShutdown: supervisor.AnySignificant},
			specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Significant = true })}, field: "Significant",
		},
		{
			name:  "significant with AutoShutdown Never",
			specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Significant = true; s.Restart = supervisor.Transient })}, field: "Significant",
		},
		{name: "backoff max below initial", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Backoff = supervisor.Backoff{Initial: 2, Max: 1} })}, field: "Backoff"},
		{name: "backoff jitter", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.Backoff.Jitter = 2 })}, field: "Backoff"},
		{name: "depends on itself", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.DependsOn = []string{"a"} })}, field: "DependsOn"},
		{name: "depends on unknown", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.DependsOn = []string{"x"} })}, field: "DependsOn"},
		{name: "depends on a later child", specs: []supervisor.Spec{with("a", func(s *supervisor.Spec) { s.DependsOn = []string{"b"} }), ok("b")}, field: "DependsOn"},
		{name: "depends twice", specs: []supervisor.Spec{ok("a"), with("b", func(s *supervisor.Spec) { s.DependsOn = []string{"a", "a"} })}, field: "DependsOn"},
		{name: "depends on temporary", specs: []supervisor.Spec{with("a", temporary), with("b", func(s *supervisor.Spec) { s.DependsOn = []string{"a"} })}, field: "DependsOn"},
		{
			name:  "depends under dynamic",
			cfg:   supervisor.Config{Strategy: supervisor.Dynamic},
			specs: []supervisor.Spec{ok("a"), with("b", func(s *supervisor.Spec) { s.DependsOn = []string{"a"} })}, field: "DependsOn",
		},
		{name: "negative intensity", cfg: supervisor.Config{Intensity: -2}, field: "Config.Intensity"},
		{name: "negative period", cfg: supervisor.Config{Period: -time.Second}, field: "Config.Period"},
		{name: "unknown strategy", cfg: supervisor.Config{Strategy: 9}, field: "Config.Strategy"},
		{name: "unknown auto shutdown", cfg: supervisor.Config{AutoShutdown: 9}, field: "Config.AutoShutdown"},
		{name: "max children without dynamic", cfg: supervisor.Config{MaxChildren: 3}, field: "Config.MaxChildren"},
		{name: "negative max children", cfg: supervisor.Config{Strategy: supervisor.Dynamic, MaxChildren: -1}, field: "Config.MaxChildren"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := supervisor.New(tt.cfg, tt.specs...)
			var se *supervisor.SpecError
			if !errors.As(err, &se) || !errors.Is(err, supervisor.ErrInvalidSpec) {
				t.Fatalf("New: %v, want a *SpecError", err)
			}
			if se.Field != tt.field {
				t.Fatalf("Field %q, want %q (%v)", se.Field, tt.field, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("%v is not %v", err, tt.is)
			}
		})
	}
}

func TestStartChildRejections(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{}, h.spec("a"))
		ctx := context.Background()
		if _, err := s.StartChild(ctx, h.spec("a")); !errors.Is(err, supervisor.ErrAlreadyPresent) {
			t.Fatalf("same ID: %v", err)
		}
		if _, err := s.StartChild(ctx, supervisor.Spec{ID: "b"}); !errors.Is(err, supervisor.ErrInvalidSpec) {
			t.Fatalf("nil Start: %v", err)
		}
		if _, err := s.StartChild(ctx, h.spec("b", dependsOn("zz"))); !errors.Is(err, supervisor.ErrInvalidSpec) {
			t.Fatalf("unknown dependency: %v", err)
		}
		h.stop()
	})
}

func TestDefaults(t *testing.T) {
	if supervisor.DefaultIntensity != 3 || supervisor.DefaultPeriod != 5*time.Second || supervisor.DefaultShutdown != 5*time.Second {
		t.Fatal("documented defaults changed")
	}
	// The zero Config allows exactly 3 restarts within 5 s.
	bubble(t, func(t *testing.T, h *harness) {
		s := h.start(supervisor.Config{}, h.spec("a"))
		for i := 0; i < 3; i++ {
			h.crash("a", errBoom)
		}
		if got := h.info("a"); got.State != supervisor.StateRunning || got.Restarts != 3 {
			t.Fatalf("after 3 crashes: %+v", got)
		}
		h.crash("a", errBoom)
		<-s.Done()
		wantErr(t, s.Err(), supervisor.ErrMaxIntensity)
	})
	// A worker is killed after 5 s; a supervisor child is waited for.
	bubble(t, func(t *testing.T, h *harness) {
		h.setOnStop("w", func(*fakeChild) {})
		h.start(supervisor.Config{}, h.spec("w"))
		go h.s.Stop(context.Background())
		synctest.Wait()
		h.clk.Advance(5*time.Second - 1)
		synctest.Wait()
		wantLog(t, h.takeLog(), "start w", "stop w")
		h.clk.Advance(1)
		synctest.Wait()
		wantLog(t, h.takeLog(), "kill w")
		<-h.s.Done()
	})
}
