package host_test

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// Without an event hook, the supervisors queue only the events the logger logs
// (Host.supervisorWants): what the filter passes must still reach the log, a killed
// instance's exit (an error) and restart (a warning) at a Warn logger.
func TestSupervisorEventsFollowTheLogLevel(t *testing.T) {
	t.Parallel()
	obs, logs := observer.New(zapcore.WarnLevel)
	// The hook runs after the observer has stored the entry (RegisterHooks adds its
	// core after the one it wraps), so a signal means the entry is in logs.
	logged := make(chan struct{}, 1)
	core := zapcore.RegisterHooks(obs, func(e zapcore.Entry) error {
		if e.Message == "host: supervisor" {
			select {
			case logged <- struct{}{}:
			default:
			}
		}
		return nil
	})
	h := hosttest.New(t, host.WithLogger(zap.New(core)))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference})
	hd, err := h.Lookup(ctxT(t), "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	hd.Kill()
	if _, err := h.Call(ctxT(t), "p", "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// The exit is logged at Error, the restart at Warn; both as "host: supervisor".
	// The delivery is asynchronous: wait for entries until both are there.
	ctx := ctxT(t)
	for {
		var exited, restarting bool
		for _, e := range logs.All() {
			if e.Level < zapcore.WarnLevel {
				t.Fatalf("%v entry %q logged at Warn", e.Level, e.Message)
			}
			if e.Message == "host: supervisor" {
				exited = exited || e.Level == zapcore.ErrorLevel
				restarting = restarting || e.Level == zapcore.WarnLevel
			}
		}
		if exited && restarting {
			return
		}
		select {
		case <-logged:
		case <-ctx.Done():
			t.Fatalf("logged %v: want the kill's exit and restart", logs.All())
		}
	}
}
