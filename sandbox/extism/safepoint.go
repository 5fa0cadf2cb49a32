package extism

import (
	"context"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// instrument adds the sandbox's fuel checks to an Extism plugin (wasmbin.Instrument with no
// memory clamp: the allocator enforces the limit), and redirects its kernel imports to
// kernelNamespace (see kernel.go).
func instrument(wasm []byte) ([]byte, error) {
	pm, err := wasmbin.Parse(wasm)
	if err != nil {
		return nil, &sandbox.ModuleError{Reason: err.Error(), Err: err}
	}
	if _, err := pm.RenameImports(redirectKernel); err != nil {
		return nil, &sandbox.ModuleError{Reason: err.Error(), Err: err}
	}
	bin, err := wasmbin.Instrument(pm, 0)
	if err != nil {
		return nil, &sandbox.ModuleError{Reason: "instrument: " + err.Error(), Err: err}
	}
	return bin, nil
}

// safePoints is the wazero function listener factory of a Module: it listens to the one
// function of the guest that the fuel checks call when the fuel runs out (exported as
// wasmbin.ExportSafePoint), every wasmbin.Fuel units of work, and to no other. Its Before
// runs in Go on the call's goroutine, with the guest's api.Module, which the SDK does not
// give out: when the instance's operation has been stopped it sets the guest's interrupt
// global, and the safe point, which reads the global next, traps.
//
// The instance is found through the context: a call's carries the SDK's plugin (the SDK adds
// it under sdk.PluginCtxKey("plugin")), which Module.plugins maps to its instance; the
// start's carries the instance itself (startKey), and its own deadline.
type safePoints struct{ m *Module }

type startKey struct{}

func (s safePoints) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	for _, n := range def.ExportNames() {
		if n == wasmbin.ExportSafePoint {
			return s
		}
	}
	return nil
}

func (s safePoints) Before(ctx context.Context, mod api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	if !s.stopped(ctx) {
		return
	}
	if g, ok := mod.ExportedGlobal(wasmbin.ExportInterrupt).(api.MutableGlobal); ok {
		g.Set(1)
	}
}

// stopped reports whether the operation running the safe point must stop.
func (s safePoints) stopped(ctx context.Context) bool {
	if p, ok := ctx.Value(sdk.PluginCtxKey("plugin")).(*sdk.Plugin); ok {
		if i, ok := s.m.plugins.Load(p); ok {
			return i.(*Instance).stopped()
		}
		return false
	}
	if _, ok := ctx.Value(startKey{}).(*Instance); ok {
		return ctx.Err() != nil // the start is bounded by its context (Limits.StartTimeout)
	}
	return false
}

func (safePoints) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (safePoints) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}
