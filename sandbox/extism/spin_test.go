package extism_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
)

// spinWasm is a minimal Extism plugin whose handler "spin" loops forever without calling
// anything: only a safe point can stop it. In WAT:
//
//	(module
//	  (import "extism:host/env" "input_length" (func (result i64)))
//	  (memory (export "memory") 1)
//	  (func (export "spin") (result i32) (loop (br 0)) (i32.const 0)))
var spinWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x09, 0x02, 0x60, 0x00, 0x01, 0x7e, 0x60, 0x00, 0x01, 0x7f, // types: () -> i64, () -> i32
	0x02, 0x20, 0x01, // one import
	0x0f, 'e', 'x', 't', 'i', 's', 'm', ':', 'h', 'o', 's', 't', '/', 'e', 'n', 'v',
	0x0c, 'i', 'n', 'p', 'u', 't', '_', 'l', 'e', 'n', 'g', 't', 'h', 0x00, 0x00,
	0x03, 0x02, 0x01, 0x01, // one function of type 1
	0x05, 0x03, 0x01, 0x00, 0x01, // one memory, min 1
	0x07, 0x11, 0x02, // two exports
	0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00,
	0x04, 's', 'p', 'i', 'n', 0x00, 0x01,
	0x0a, 0x0b, 0x01, 0x09, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00, 0x0b, // loop br 0 end i32.const 0
}

// spinning starts the spin handler in a goroutine and returns once the call is about to run
// the guest.
func spinning(t *testing.T, inst *extism.Instance, ctx context.Context) <-chan error {
	t.Helper()
	started := make(chan struct{})
	extism.OnCall(inst, func() { close(started) })
	res := make(chan error, 1)
	go func() {
		_, err := inst.Call(ctx, "spin", nil)
		res <- err
	}()
	select {
	case <-started:
	case err := <-res:
		t.Fatalf("spin returned before it ran: %v", err)
	case <-time.After(30 * time.Second): // bounds a hang only
		t.Fatal("spin never started")
	}
	return res
}

// A guest spinning in a loop with no call in it is stopped by the watchdog at its deadline,
// by the caller's context and by Kill, through its safe points; with the module compiled by
// the package (its own watchdog) and through an engine (the engine's).
func TestSpinningGuestIsStopped(t *testing.T) {
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx, sandbox.WithFormats(extism.Format()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(ctx) })
	compilers := []struct {
		name string
		make func(t *testing.T, cfg sandbox.Config) *extism.Instance
	}{
		{"package", func(t *testing.T, cfg sandbox.Config) *extism.Instance { return instance(t, spinWasm, cfg, nil) }},
		{"engine", func(t *testing.T, cfg sandbox.Config) *extism.Instance {
			code, err := e.Load(ctx, spinWasm, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = code.Close(ctx) })
			r, err := code.Instantiate(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close(ctx) })
			return extism.InstanceOf(r)
		}},
	}
	for _, c := range compilers {
		t.Run(c.name+"/deadline", func(t *testing.T) {
			const limit = 30 * time.Millisecond
			i := c.make(t, sandbox.Config{Limits: sandbox.Limits{CallTimeout: limit}})
			start := time.Now()
			err := within(t, spinning(t, i, ctx), "deadline")
			var de *sandbox.DeadlineError
			if !errors.As(err, &de) || de.Caller || de.Timeout != limit.String() || !sandbox.Fatal(err) {
				t.Fatalf("got %v", err)
			}
			if d := time.Since(start); d < limit {
				t.Fatalf("stopped after %v, before its %v deadline", d, limit)
			}
			if _, err := i.Call(ctx, "spin", nil); !errors.As(err, &de) {
				t.Fatalf("next call: %v", err)
			}
		})
		t.Run(c.name+"/caller-cancel", func(t *testing.T) {
			i := c.make(t, sandbox.Config{Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
			cctx, cancel := context.WithCancel(ctx)
			res := spinning(t, i, cctx)
			cancel()
			if err := within(t, res, "cancel"); !errors.Is(err, sandbox.ErrCanceled) || !errors.Is(err, context.Canceled) || !sandbox.Fatal(err) {
				t.Fatalf("got %v", err)
			}
		})
		t.Run(c.name+"/kill", func(t *testing.T) {
			i := c.make(t, sandbox.Config{Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
			res := spinning(t, i, ctx)
			i.Kill()
			if err := within(t, res, "Kill"); !errors.Is(err, sandbox.ErrCanceled) || !sandbox.Fatal(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}
