package host_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Under InstancePerCall, CallThen hands the output to then before the instance's reset, and
// the reset is done, on the caller's goroutine, when CallThen returns: the next call finds
// the instance pristine without waiting, and the reset hook ran between then and the return.
// Under SharedInstance then gets the output and the marker stays (the control).
func TestCallThen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		iso  host.Isolation
		want string
	}{{host.SharedInstance, "marker"}, {host.InstancePerCall, ""}} {
		t.Run(tc.iso.String(), func(t *testing.T) {
			t.Parallel()
			var inThen, returned, resetInThen, resetAfterReturn atomic.Int32
			h := hosttest.New(t, host.WithResetHook(func(context.Context) {
				if inThen.Load() != 0 {
					resetInThen.Add(1)
				}
				if returned.Load() != 0 {
					resetAfterReturn.Add(1)
				}
			}))
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Isolation: tc.iso})
			ctx := ctxT(t)
			for i := range 5 {
				returned.Store(0)
				calls := 0
				h.CallThen(ctx, "p", "set", []byte("marker"), nil, func(out []byte, err error) {
					inThen.Store(1)
					defer inThen.Store(0)
					calls++
					if err != nil {
						t.Errorf("round %d: set: %v", i, err)
					}
				})
				returned.Store(1)
				if calls != 1 {
					t.Fatalf("round %d: then called %d times", i, calls)
				}
				var got string
				returned.Store(0)
				h.CallThen(ctx, "p", "get", nil, nil, func(out []byte, err error) {
					if err != nil {
						t.Errorf("round %d: get: %v", i, err)
					}
					got = string(out)
				})
				returned.Store(1)
				if got != tc.want {
					t.Fatalf("round %d: get = %q, want %q", i, got, tc.want)
				}
			}
			if n := resetInThen.Load(); n != 0 {
				t.Fatalf("%d resets started while then ran", n)
			}
			if n := resetAfterReturn.Load(); n != 0 {
				t.Fatalf("%d resets started after CallThen returned: not on the caller's goroutine", n)
			}
			pi, err := h.Plugin("p")
			if err != nil {
				t.Fatal(err)
			}
			wantResets := uint64(0)
			if tc.iso == host.InstancePerCall {
				wantResets = 10 // every one done before its CallThen returned
			}
			if pi.Resets != wantResets || pi.Restarts != 0 {
				t.Fatalf("resets %d, want %d; restarts %d", pi.Resets, wantResets, pi.Restarts)
			}
		})
	}
}

// then gets CallAppend's errors: an unknown plugin, a trap (which takes the failure path, a
// restart and no reset, as with CallAppend).
func TestCallThenErrors(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	ctx := ctxT(t)
	var got error
	h.CallThen(ctx, "nope", "echo", nil, nil, func(_ []byte, err error) { got = err })
	if !errors.Is(got, host.ErrNotFound) {
		t.Fatalf("unknown plugin: %v", got)
	}
	call(t, h, "p", "set", "marker")
	h.CallThen(ctx, "p", "trap", nil, nil, func(_ []byte, err error) { got = err })
	if !errors.Is(got, sandbox.ErrTrap) {
		t.Fatalf("trap: %v", got)
	}
	if out := call(t, h, "p", "get", ""); out != "" {
		t.Fatalf("after the trap, get = %q", out)
	}
	if pi, _ := h.Plugin("p"); pi.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", pi.Restarts)
	}
}

// A then that panics: the panic reaches CallThen's caller, and the instance is reset all the
// same (else its slot would stay taken, and the one-instance pool would serve nothing more).
func TestCallThenPanics(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	ctx := ctxT(t)
	func() {
		defer func() {
			if r := recover(); r != "then failed" {
				t.Fatalf("recovered %v", r)
			}
		}()
		h.CallThen(ctx, "p", "set", []byte("marker"), nil, func([]byte, error) { panic("then failed") })
	}()
	if pi, _ := h.Plugin("p"); pi.Resets != 1 {
		t.Fatalf("resets %d, want 1", pi.Resets)
	}
	if out := call(t, h, "p", "get", ""); out != "" {
		t.Fatalf("get = %q: the instance was not reset", out)
	}
}

// A host closes while a CallThen's then runs: Close does not wait for then (the instance's
// operation is over; its reset has not begun), and when then returns there is no reset to run
// on a closed member. Neither blocks, nothing leaks (goleak), and then's output stays valid.
func TestCallThenCloseWhileThenRuns(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	ctx := ctxT(t)
	inThen, closed := make(chan struct{}), make(chan error, 1)
	var got string
	go func() {
		<-inThen
		closed <- h.Close(ctx)
	}()
	h.CallThen(ctx, "p", "echo", []byte("hello"), nil, func(out []byte, err error) {
		if err != nil {
			t.Errorf("echo: %v", err)
		}
		close(inThen)
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("close: %v", err)
			}
		case <-time.After(10 * time.Second): // a failure limit, not a wait
			t.Errorf("Close waited for then")
		}
		got = string(out)
	})
	if got != "hello" {
		t.Fatalf("echo = %q", got)
	}
	if pi, err := h.Plugin("p"); err == nil {
		t.Fatalf("a closed host still lists the plugin: %+v", pi)
	}
}
