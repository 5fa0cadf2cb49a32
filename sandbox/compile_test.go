package sandbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Compiling bytes whose code the engine holds does no work: the Modules share the code and
// the inspection (one Info); another memory limit is other code; once every Module of the
// bytes is closed, the engine keeps nothing of them.
func TestCompileShares(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	a := compile(t, e, referencePath, sandbox.Config{})
	b := compile(t, e, referencePath, sandbox.Config{})
	c := compile(t, e, referencePath, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 8}})
	if a.Info() != b.Info() {
		t.Error("two Modules of the same bytes and limit inspected them twice")
	}
	if a.Info() == c.Info() {
		t.Error("another memory limit shares the first compilation")
	}
	for _, m := range []*sandbox.Module{a, b, c} {
		if err := m.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The ABI check still runs for bytes the engine holds no code for.
	_, err := e.Compile(context.Background(), read(t, "testdata/noabi.wasm"), sandbox.Config{})
	var abiErr *sandbox.ABIError
	if !errors.As(err, &abiErr) {
		t.Fatalf("noabi.wasm: %v, want *ABIError", err)
	}
	// Once every Module of the bytes is closed, the engine keeps nothing of them.
	if d := compile(t, e, referencePath, sandbox.Config{}); d.Info() == a.Info() {
		t.Error("the engine kept code no open Module uses")
	}
}
