package faults_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/internal/fakeclock"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// recovered returns an event hook and a channel that receives the plugin's recoveries.
func recovered(name string) (func(host.Event), chan struct{}) {
	ch := make(chan struct{}, 16)
	return func(e host.Event) {
		if e.Kind == host.EventRecovered && e.Plugin == name {
			ch <- struct{}{}
		}
	}, ch
}

// crashFlood calls handler of the plugin n times with distinct inputs (so that the poison
// defence stays out of it) and returns how many calls reached an instance and failed with
// crash, and the last *FailedError. Every other outcome fails the test.
func crashFlood(t *testing.T, h *host.Host, name, handler string, n int, crash error) (int, *host.FailedError) {
	t.Helper()
	crashes := 0
	var fe *host.FailedError
	for i := range n {
		_, err := h.Call(ctxT(t), name, handler, []byte(strconv.Itoa(i)))
		switch {
		case errors.Is(err, crash):
			crashes++
		case errors.As(err, &fe) && errors.Is(err, host.ErrPluginFailed):
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	return crashes, fe
}

// A plugin that traps on any input, called a thousand times: quarantined after its restart
// intensity, the host stays up, the healthy plugin answers throughout, the calls fail at once
// with ErrPluginFailed and the retry time, and after the backoff the plugin comes back with
// fresh instances.
func TestQuarantine(t *testing.T) {
	for _, tc := range []struct {
		name, handler string
		calls         int
		limits        sandbox.Limits
		crash         error
	}{
		{"trap on any input", "trap", 1000, sandbox.Limits{}, sandbox.ErrTrap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := fakeclock.New()
			hook, back := recovered("hostile")
			h := newHost(t, host.WithClock(clk), host.WithEventHook(hook))
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, "quarantine_hostile"),
				Instances: 2, Limits: tc.limits})
			withinMemory(t, 64<<20, func() {
				whileHealthy(t, h, func() {
					crashes, fe := crashFlood(t, h, "hostile", tc.handler, tc.calls, tc.crash)
					// Intensity 3: the fourth crash trips it; the pool's other instance may
					// take one more call while the pool stops.
					if crashes < 4 || crashes > 5 || fe == nil {
						t.Fatalf("%d crashes reached an instance; failed: %v", crashes, fe)
					}
					if fe.RetryAfter != host.DefaultQuarantineBase || fe.State != host.PluginFailed {
						t.Fatalf("failed error %+v", fe)
					}
				})
			})
			select {
			case <-h.Done():
				t.Fatalf("the host stopped: %v", h.Err())
			default:
			}
			clk.Advance(host.DefaultQuarantineBase)
			select {
			case <-back:
			case <-ctxT(t).Done():
				t.Fatal("no recovery")
			}
			// The successor starts clean: fresh instances at their initial memory.
			pi, err := h.Plugin("hostile")
			if err != nil {
				t.Fatal(err)
			}
			for _, ii := range pi.Instances {
				if !ii.Up || ii.MemoryPages != 1 {
					t.Fatalf("instance after recovery: %+v", ii)
				}
			}
			if out, err := h.Call(ctxT(t), "hostile", "echo", []byte("clean")); err != nil || string(out) != "clean" {
				t.Fatalf("recovered plugin: %q, %v", out, err)
			}
			checkHealthy(t, h)
		})
	}
}

// A plugin that runs past its call deadline on every input is not quarantined: the input asks
// for more than the plugin may spend, which a client controls, so each call fails with its
// DeadlineError and its instance is replaced without counting towards the restart intensity
// (wasmvisor_budget_ended_total). Otherwise four expensive requests within five seconds, from
// anyone, would take a healthy policy plugin out of service.
func TestDeadlinesDoNotQuarantine(t *testing.T) {
	h := newHost(t, host.WithPoisonInput(-1, 0, 0))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, "quarantine_hostile"),
		Instances: 2, Limits: sandbox.Limits{CallTimeout: 20 * time.Millisecond}})
	const calls = 30
	withinMemory(t, 64<<20, func() {
		whileHealthy(t, h, func() {
			for i := range calls {
				_, err := h.Call(ctxT(t), "hostile", "loop", []byte(strconv.Itoa(i)))
				if !errors.Is(err, sandbox.ErrDeadline) {
					t.Fatalf("call %d: %v, want ErrDeadline", i, err)
				}
			}
		})
	})
	if st, err := h.PluginState("hostile"); st != host.PluginRunning || err != nil {
		t.Fatalf("state %v, %v; want running", st, err)
	}
	if n := metricValue(t, h, "wasmvisor_budget_ended_total"); n != calls {
		t.Fatalf("wasmvisor_budget_ended_total = %v, want %d", n, calls)
	}
	if out, err := h.Call(ctxT(t), "hostile", "echo", []byte("clean")); err != nil || string(out) != "clean" {
		t.Fatalf("successor: %q, %v", out, err)
	}
}
