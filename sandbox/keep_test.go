package sandbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Engine.Keep holds a module's code while no Module of it is open, until every Keep of the
// same bytes and memory limit is released; another limit is other code.
func TestKeep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEngine(t)
	wasm := read(t, referencePath)
	r1, err := e.Keep(ctx, wasm, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := e.Keep(ctx, wasm, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if n := sandbox.CompiledCodes(e); n != 1 {
		t.Fatalf("kept twice: %d compiled modules, want 1", n)
	}
	m := compile(t, e, referencePath, sandbox.Config{})
	_ = m.Close(ctx)
	if n := sandbox.CompiledCodes(e); n != 1 {
		t.Fatalf("after the last module closed: %d compiled modules, want the kept one", n)
	}
	r1()
	r1() // idempotent: must not release r2's hold
	if n := sandbox.CompiledCodes(e); n != 1 {
		t.Fatalf("one of two holds released: %d compiled modules, want 1", n)
	}
	r2()
	if n := sandbox.CompiledCodes(e); n != 0 {
		t.Fatalf("every hold released: %d compiled modules, want 0", n)
	}

	if _, err := e.Keep(ctx, []byte("not wasm"), sandbox.Config{}); !errors.Is(err, sandbox.ErrInvalidModule) {
		t.Fatalf("Keep of bad bytes: %v, want %v", err, sandbox.ErrInvalidModule)
	}
	if _, err := e.Keep(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 300}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil { // closes the kept code
		t.Fatal(err)
	}
	if _, err := e.Keep(ctx, wasm, sandbox.Config{}); !errors.Is(err, sandbox.ErrClosed) {
		t.Fatalf("Keep on a closed engine: %v, want %v", err, sandbox.ErrClosed)
	}
}
