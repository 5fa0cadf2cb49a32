package sandbox

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestRecycle: in every language, an instance closed after serving — or after a trap, a
// deadline, a kill — gives its module instance to the next instance of its Module, which
// sees nothing of it: no marker, no counter, the config it was given. An instance whose guest
// exited (wazero closed its module instance) is not recycled; nor is any with recycling off.
func TestRecycle(t *testing.T) {
	ctx := context.Background()
	for _, lang := range []struct{ name, path string }{
		{"wat", "../plugins/reference/reference.wasm"},
		{"go", "../plugins/conformance/go/conformance.wasm"},
		{"rust", "../plugins/conformance/rust/conformance.wasm"},
		{"c", "../plugins/conformance/c/conformance.wasm"},
		{"assemblyscript", "../plugins/conformance/assemblyscript/conformance.wasm"},
	} {
		t.Run(lang.name, func(t *testing.T) {
			for _, recycling := range []bool{true, false} {
				e, err := NewEngine(ctx, WithRecycling(recycling))
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close(ctx)
				wasm, err := os.ReadFile(lang.path)
				if err != nil {
					t.Fatal(err)
				}
				m, err := e.Compile(ctx, wasm, Config{Limits: Limits{CallTimeout: 50 * time.Millisecond}})
				if err != nil {
					t.Fatal(err)
				}
				for _, end := range []string{"close", "trap", "deadline", "kill", "exit"} {
					a, err := m.Instantiate(ctx, map[string]string{"k": "a"})
					if err != nil {
						t.Fatal(err)
					}
					mustCallI(t, a, "set", "marker")
					mustCallI(t, a, "count", "5")
					switch end {
					case "trap":
						_, err = a.Call(ctx, "trap", nil)
					case "deadline":
						_, err = a.Call(ctx, "loop", nil)
					case "exit":
						_, err = a.Call(ctx, "exit", []byte("3"))
					case "kill":
						a.Kill()
					}
					if end != "close" && end != "kill" && err == nil {
						t.Fatalf("%s: no error", end)
					}
					wm := a.wm
					calls := a.Calls()
					if err := a.Close(ctx); err != nil {
						t.Fatal(err)
					}
					if a.Calls() != calls || a.Err() == nil {
						t.Fatalf("%s: the closed instance: calls %d (was %d), err %v", end, a.Calls(), calls, a.Err())
					}
					b, err := m.Instantiate(ctx, map[string]string{"k": "b"})
					if err != nil {
						t.Fatalf("%s: %v", end, err)
					}
					want := recycling && end != "exit"
					if got := b.wm == wm; got != want {
						t.Fatalf("recycling %v, %s: the module instance was adopted: %v", recycling, end, got)
					}
					if got := mustCallI(t, b, "get", ""); got != "" {
						t.Fatalf("%s: the next instance sees the marker %q", end, got)
					}
					if got := mustCallI(t, b, "config_get", "k"); got != "b" {
						t.Fatalf("%s: config_get = %q", end, got)
					}
					tel, err := b.Telemetry()
					if err != nil {
						t.Fatal(err)
					}
					for _, mt := range tel {
						if mt.Name == "requests_total" && mt.Value != 0 {
							t.Fatalf("%s: the next instance counts %v", end, mt.Value)
						}
					}
					if err := b.Close(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

func mustCallI(t *testing.T, i *Instance, h, in string) string {
	t.Helper()
	out, err := i.Call(context.Background(), h, []byte(in))
	if err != nil && !errors.Is(err, ErrGuest) {
		t.Fatalf("%s: %v", h, err)
	}
	return string(out)
}
