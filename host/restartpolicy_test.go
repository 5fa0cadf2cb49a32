package host_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/internal/fakeclock"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// A plugin with its own intensity 1 is quarantined at its second crash within the period,
// while a plugin of the same host on the host's default (3) keeps being restarted.
func TestRestartPolicyIntensityPerPlugin(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(clk), host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "strict", Wasm: hostile, RestartPolicy: host.RestartPolicy{Intensity: 1}})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "lenient", Wasm: hostile})
	ctx := ctxT(t)

	trap := func(name string, i int) error {
		_, err := h.Call(ctx, name, "trap", []byte(strconv.Itoa(i))) // distinct: never poison
		return err
	}
	for i := range 2 {
		if err := trap("strict", i); !errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("strict trap %d: %v", i, err)
		}
	}
	var fe *host.FailedError
	if err := trap("strict", 2); !errors.As(err, &fe) || !errors.Is(err, host.ErrPluginFailed) {
		t.Fatalf("strict after two crashes: %v, want ErrPluginFailed", err)
	}
	var ie *supervisor.IntensityError
	if !errors.As(fe.Cause, &ie) || ie.Restarts != 2 {
		t.Fatalf("cause %v, want an IntensityError after 2 restarts", fe.Cause)
	}
	evs.want(t, "strict", host.EventQuarantined)

	for i := range 3 {
		if err := trap("lenient", 10+i); !errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("lenient trap %d: %v", i, err)
		}
	}
	if got := call(t, h, "lenient", "echo", "still here"); got != "still here" {
		t.Fatalf("lenient after three crashes: %q", got)
	}
	if st, err := h.PluginState("lenient"); st != host.PluginRunning || err != nil {
		t.Fatalf("lenient state %v, %v", st, err)
	}
	evs.none(t)
}

// A plugin's backoff delays the restart of its crashed instance on the host's clock.
func TestRestartPolicyBackoff(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	backoffs := make(chan supervisor.Event, 16)
	h := hosttest.New(t, host.WithClock(clk), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventSupervisor && e.Supervisor.Kind == supervisor.EventBackoff {
			backoffs <- *e.Supervisor
		}
	}))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "slow", Wasm: hostile,
		RestartPolicy: host.RestartPolicy{Backoff: supervisor.Backoff{Initial: time.Second}}})
	ctx := ctxT(t)
	if _, err := h.Call(ctx, "slow", "trap", []byte("0")); !errors.Is(err, sandbox.ErrTrap) {
		t.Fatalf("trap: %v", err)
	}
	select {
	case e := <-backoffs:
		if e.Supervisor != "plugin:slow" || e.Delay != time.Second {
			t.Fatalf("backoff event %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no backoff event")
	}
	clk.Advance(time.Second)
	if got := call(t, h, "slow", "echo", "back"); got != "back" {
		t.Fatalf("after the backoff: %q", got)
	}
}

func TestRestartPolicyValidation(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	for _, tc := range []struct {
		name string
		rp   host.RestartPolicy
	}{
		{"NegativeIntensity", host.RestartPolicy{Intensity: -2}},
		{"NegativePeriod", host.RestartPolicy{Period: -time.Second}},
		{"NegativeMinUptime", host.RestartPolicy{MinUptime: -time.Second}},
		{"NegativeBackoff", host.RestartPolicy{Backoff: supervisor.Backoff{Initial: -1}}},
		{"BackoffMaxBelowInitial", host.RestartPolicy{Backoff: supervisor.Backoff{Initial: time.Second, Max: time.Millisecond}}},
		{"BackoffJitter", host.RestartPolicy{Backoff: supervisor.Backoff{Jitter: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.Load(ctxT(t), host.Plugin{Name: tc.name, Wasm: hostile, RestartPolicy: tc.rp})
			if !errors.Is(err, host.ErrInvalidPlugin) {
				t.Fatalf("Load = %v, want ErrInvalidPlugin", err)
			}
		})
	}
	// NoRestarts is the one negative intensity allowed; Replace keeps the policy.
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "none", Wasm: hostile, RestartPolicy: host.RestartPolicy{Intensity: supervisor.NoRestarts}})
	err := h.Replace(ctxT(t), host.Plugin{Name: "none", Wasm: hostile, RestartPolicy: host.RestartPolicy{Intensity: 5}})
	if !errors.Is(err, host.ErrInvalidPlugin) {
		t.Fatalf("Replace with another policy = %v, want ErrInvalidPlugin", err)
	}
	if err := h.Replace(ctxT(t), host.Plugin{Name: "none", Wasm: hostile, RestartPolicy: host.RestartPolicy{Intensity: supervisor.NoRestarts}}); err != nil {
		t.Fatalf("Replace with the same policy: %v", err)
	}
}
