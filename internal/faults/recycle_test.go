package faults_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestRecycledInstanceIsPristine: recycle_scribble overwrites all of its memory and its
// globals, then returns, traps or loops past its deadline; the instance started after it
// closed (which adopts its module instance: sandbox.WithRecycling) has the digest of memory
// and globals that an instance of an engine without recycling has — and so has an instance
// rewound after a scribble (sandbox.Rewinder, instance-per-call).
func TestRecycledInstanceIsPristine(t *testing.T) {
	ctx := ctxT(t)
	wasm := hostile(t, "recycle_scribble")
	cfg := sandbox.Config{Limits: sandbox.Limits{CallTimeout: 100 * time.Millisecond}}
	module := func(recycling bool) *sandbox.Module {
		e, err := sandbox.NewEngine(ctx, sandbox.WithRecycling(recycling))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Close(context.Background()) })
		m, err := e.Compile(ctx, wasm, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if on, why := m.Snapshots(); !on {
			t.Fatalf("no snapshots: %s", why)
		}
		return m
	}
	digest := func(i *sandbox.Instance) []byte {
		t.Helper()
		out, err := i.Call(ctx, "digest", nil)
		if err != nil || len(out) != 8 {
			t.Fatalf("digest: %x, %v", out, err)
		}
		return out
	}
	fresh, err := module(false).Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := digest(fresh)
	_ = fresh.Close(ctx)

	m := module(true)
	for _, h := range []string{"scribble", "scribble_trap", "scribble_loop", "scribble"} {
		i, err := m.Instantiate(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := digest(i); !bytes.Equal(got, want) {
			t.Fatalf("before %s: digest %x, a fresh instance's %x", h, got, want)
		}
		_, err = i.Call(ctx, h, nil)
		switch {
		case h == "scribble_trap" && !errors.Is(err, sandbox.ErrTrap),
			h == "scribble_loop" && !errors.Is(err, sandbox.ErrDeadline),
			h == "scribble" && err != nil:
			t.Fatalf("%s: %v", h, err)
		}
		if h == "scribble" {
			if got := digest(i); bytes.Equal(got, want) {
				t.Fatal("the scribble changed nothing: the test cannot fail")
			}
		}
		if err := i.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close(ctx)
	if err := i.Checkpoint(); err != nil { // as fresh as the others were before their digest
		t.Fatal(err)
	}
	if got := digest(i); !bytes.Equal(got, want) {
		t.Fatalf("after the scribbles: digest %x, a fresh instance's %x", got, want)
	}
	if _, err := i.Call(ctx, "scribble", nil); err != nil {
		t.Fatal(err)
	}
	if err := i.Rewind(); err != nil {
		t.Fatal(err)
	}
	if got := digest(i); !bytes.Equal(got, want) {
		t.Fatalf("rewound: digest %x, a fresh instance's %x", got, want)
	}
}
