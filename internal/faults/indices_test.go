package faults_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestIndicesPastTheModule (RATIONALE.md, "Constant globals folded at instrument time"): a
// module that calls a function past its own (indices_safe_point, to reach the safe point the
// sandbox appends) or names a type past its own (indices_added_type, the safe point's type) is
// invalid as written, and the sandbox's instrumentation would make it valid. Every load is
// refused with a *sandbox.ModuleError (ErrInvalidModule) naming the index and the bound,
// while the healthy plugin keeps answering; the name stays free, and a valid plugin loads
// under it afterwards.
func TestIndicesPastTheModule(t *testing.T) {
	h := newHost(t)
	for _, c := range []struct {
		name string
		want string
	}{
		{"indices_safe_point", "function index 5 out of range (4 functions)"},
		{"indices_added_type", "type index 3 out of range (3 types)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := hostile(t, c.name)
			whileHealthy(t, h, func() {
				for range 20 {
					err := h.Load(ctxT(t), host.Plugin{Name: c.name, Wasm: wasm})
					var me *sandbox.ModuleError
					if !errors.Is(err, sandbox.ErrInvalidModule) || !errors.As(err, &me) || !strings.Contains(err.Error(), c.want) {
						t.Fatalf("load: %v, want a *sandbox.ModuleError saying %q", err, c.want)
					}
				}
			})
			if _, err := h.Plugin(c.name); err == nil {
				t.Fatal("the refused plugin is listed")
			}
			hosttest.LoadPlugin(t, h, host.Plugin{Name: c.name, Wasm: reference})
			if out, err := h.Call(ctxT(t), c.name, "echo", []byte("after")); err != nil || string(out) != "after" {
				t.Fatalf("a valid plugin under the same name: %q, %v", out, err)
			}
			checkHealthy(t, h)
		})
	}
}
