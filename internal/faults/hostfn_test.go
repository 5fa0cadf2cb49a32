package faults_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// hostFnTimeout is the hostile host-function plugin's call deadline.
const hostFnTimeout = 500 * time.Millisecond

// TestHostFunctionsHostile runs hostfn_hostile.wat's attacks on the host-function imports
// (host_fn, host_call, host_result) against a host that offers and grants it four functions,
// while the healthy plugin keeps being called: out-of-range names, inputs and result buffers
// are ABI violations and no function runs on them; unknown handles are answered
// STATUS_UNKNOWN_HANDLER; an input of all memory is refused above the input limit before the
// function runs; an endless loop of host calls and a function that blocks both end at the call
// deadline, the blocked function's context ended; a thousand panics are recovered, counted in
// wasmvisor_host_function_panics_total and leave the instance serving; 100 results of 1 MiB
// never fetched leave the host's memory within 64 MiB. Every attack's successor starts clean.
func TestHostFunctionsHostile(t *testing.T) {
	var echoed, blockedEnded atomic.Int64
	big := make([]byte, sandbox.DefaultHostFuncOutput)
	fns := []sandbox.HostFunc{
		{Name: "echo", Func: func(_ context.Context, in []byte) ([]byte, error) {
			echoed.Add(1)
			return in, nil
		}},
		{Name: "block", Func: func(ctx context.Context, _ []byte) ([]byte, error) {
			select {
			case <-ctx.Done():
				blockedEnded.Add(1)
				return nil, ctx.Err()
			case <-time.After(time.Minute): // bounds a hang only
				return nil, errors.New("the call's context never ended")
			}
		}},
		{Name: "panics", Func: func(context.Context, []byte) ([]byte, error) { panic("host function bug") }},
		{Name: "big", Func: func(context.Context, []byte) ([]byte, error) { return big, nil }},
	}
	h := newHost(t, host.WithHostFunctions(fns...))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: hostileName, Wasm: hostile(t, "hostfn_hostile"), Instances: 1,
		Limits:        sandbox.Limits{CallTimeout: hostFnTimeout, MemoryPages: 32},
		RestartPolicy: host.RestartPolicy{Intensity: 100}, // the attacks end instances in a row
		Capabilities:  sandbox.Capabilities{HostFunctions: []string{"echo", "block", "panics", "big"}}})
	call := func(handler string) ([]byte, error) { return h.Call(ctxT(t), hostileName, handler, nil) }

	whileHealthy(t, h, func() {
		for _, handler := range []string{"bad_name", "huge_name", "bad_input", "bad_result", "result_edge"} {
			before := echoed.Load()
			if _, err := call(handler); !errors.Is(err, sandbox.ErrABIViolation) {
				t.Fatalf("%s: %v, want %v", handler, err, sandbox.ErrABIViolation)
			}
			if handler == "bad_input" && echoed.Load() != before {
				t.Fatal("bad_input: the host function ran on an input out of range")
			}
		}
		if out, err := call("bad_handle"); err != nil || string(out) != "ok" {
			t.Fatalf("bad_handle: %q, %v", out, err)
		}
		before := echoed.Load()
		_, err := call("whole_memory")
		var ge *sandbox.GuestError
		if !errors.As(err, &ge) || ge.Status != abi.StatusError ||
			ge.Message != `host function "echo": input of 2097152 bytes, above its 1048576` {
			t.Fatalf("whole_memory: %v, want the input limit's guest error", err)
		}
		if echoed.Load() != before {
			t.Fatal("whole_memory: the host function ran on an input over its limit")
		}
		for _, handler := range []string{"flood", "block"} {
			var de *sandbox.DeadlineError
			if _, err := call(handler); !errors.As(err, &de) || de.Caller {
				t.Fatalf("%s: %v, want the plugin's own *DeadlineError", handler, err)
			}
		}
		if blockedEnded.Load() != 1 {
			t.Fatalf("the blocked host function's context ended %d times, want 1", blockedEnded.Load())
		}
		if out, err := call("panics"); err != nil || string(out) != "ok" {
			t.Fatalf("panics: %q, %v", out, err)
		}
		withinMemory(t, 64<<20, func() {
			for range 5 {
				if out, err := call("never_read"); err != nil || string(out) != "ok" {
					t.Fatalf("never_read: %q, %v", out, err)
				}
			}
		})
	})
	if n := metricValue(t, h, "wasmvisor_host_function_panics_total"); n != 1000 {
		t.Fatalf("wasmvisor_host_function_panics_total = %v, want 1000", n)
	}
	// The successor of every ended instance serves.
	if out, err := call("bad_handle"); err != nil || string(out) != "ok" {
		t.Fatalf("after the attacks: %q, %v", out, err)
	}
}
