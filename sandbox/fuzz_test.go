package sandbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// FuzzLoad feeds any bytes through everything a host does with a module it is given:
// Inspect, Compile (ABI check, instrumentation, wazero) and, for what compiles, a start
// under a short deadline and one call. Nothing may panic, and every error must be one of the
// package's typed errors.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{referencePath, miniPath, "testdata/noabi.wasm", "testdata/hang.wasm"} {
		f.Add(read(f, p))
	}
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx)
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close(ctx)
	typed := func(err error, allowed ...error) bool {
		for _, a := range allowed {
			if errors.Is(err, a) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			return
		}
		info, err := sandbox.Inspect(b)
		if err != nil {
			if !typed(err, sandbox.ErrInvalidModule) {
				t.Fatalf("Inspect: untyped error %v", err)
			}
			return
		}
		m, err := e.Compile(ctx, b, sandbox.Config{Limits: sandbox.Limits{
			MemoryPages: 16, CallTimeout: 20 * time.Millisecond, StartTimeout: 20 * time.Millisecond,
		}})
		if err != nil {
			if !typed(err, sandbox.ErrInvalidModule, sandbox.ErrABI, sandbox.ErrMemoryLimit) {
				t.Fatalf("Compile: untyped error %v", err)
			}
			if len(info.Problems) == 0 && errors.Is(err, sandbox.ErrABI) {
				t.Fatalf("Compile found ABI problems that Inspect did not: %v", err)
			}
			return
		}
		defer m.Close(ctx)
		i, err := m.Instantiate(ctx, map[string]string{"k": "v"})
		if err != nil {
			if !typed(err, sandbox.ErrInvalidModule, sandbox.ErrABI, sandbox.ErrTrap, sandbox.ErrDeadline,
				sandbox.ErrMemoryLimit, sandbox.ErrExit, sandbox.ErrABIViolation, sandbox.ErrGuest) {
				t.Fatalf("Instantiate: untyped error %v", err)
			}
			return
		}
		defer i.Close(ctx)
		if hs := i.Handlers(); len(hs) > 0 {
			if _, err := i.Call(ctx, hs[0], []byte("fuzz")); err != nil && !typed(err, sandbox.ErrTrap, sandbox.ErrDeadline,
				sandbox.ErrMemoryLimit, sandbox.ErrExit, sandbox.ErrABIViolation, sandbox.ErrGuest) {
				t.Fatalf("Call %q: untyped error %v", hs[0], err)
			}
		}
	})
}
