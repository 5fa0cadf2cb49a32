package extism_test

import (
	"context"
	"testing"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// The same work through this package and through the Extism Go SDK directly, side by side:
// one call on a warm instance, and a fresh instance (instantiate, one call, close) of a
// module compiled once. Plugins: count_vowels (Rust PDK) and hello (C PDK).
//
// Both sides bound each call by the same timeout, benchTimeout, by the same mechanism: a
// context.WithTimeout per call on a runtime built WithCloseOnContextDone. This package does
// that for its Limits.CallTimeout; the SDK does it only when the manifest has a timeout_ms
// (without one, its runtime does not watch the context and its calls are unbounded, cheaper
// work than ours), so the SDK's manifest is given the same timeout.
var benchPlugins = []struct{ file, handler, input string }{
	{"count_vowels.wasm", "count_vowels", "hello world"},
	{"hello.wasm", "run_test", ""},
}

// benchTimeout is both sides' per-call timeout (this package's default).
const benchTimeout = sandbox.DefaultCallTimeout

// benchConfig is this package's side: the call timeout stated, not left to the default.
var benchConfig = sandbox.Config{Limits: sandbox.Limits{CallTimeout: benchTimeout}}

// benchManifest is the SDK's side, with the same call timeout.
func benchManifest(wasm []byte) sdk.Manifest {
	return sdk.Manifest{Wasm: []sdk.Wasm{sdk.WasmData{Data: wasm}}, Timeout: uint64(benchTimeout.Milliseconds())}
}

func BenchmarkCall(b *testing.B) {
	ctx := context.Background()
	for _, p := range benchPlugins {
		wasm := extismtest.Read(b, p.file)
		in := []byte(p.input)
		b.Run(p.file+"/wasmvisor", func(b *testing.B) {
			m, err := extism.Compile(ctx, wasm, benchConfig)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close(ctx)
			inst, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			var out []byte
			b.ReportAllocs()
			for b.Loop() {
				if out, err = inst.CallAppend(ctx, p.handler, in, out[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(p.file+"/sdk", func(b *testing.B) {
			cp, err := sdk.NewCompiledPlugin(ctx, benchManifest(wasm), sdk.PluginConfig{EnableWasi: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cp.Close(ctx)
			inst, err := cp.Instance(ctx, sdk.PluginInstanceConfig{ModuleConfig: wazero.NewModuleConfig()})
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := inst.CallWithContext(ctx, p.handler, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFreshInstance(b *testing.B) {
	ctx := context.Background()
	for _, p := range benchPlugins {
		wasm := extismtest.Read(b, p.file)
		in := []byte(p.input)
		b.Run(p.file+"/wasmvisor", func(b *testing.B) {
			m, err := extism.Compile(ctx, wasm, benchConfig)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close(ctx)
			b.ReportAllocs()
			for b.Loop() {
				inst, err := m.Instantiate(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := inst.Call(ctx, p.handler, in); err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
		b.Run(p.file+"/sdk", func(b *testing.B) {
			cp, err := sdk.NewCompiledPlugin(ctx, benchManifest(wasm), sdk.PluginConfig{EnableWasi: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cp.Close(ctx)
			b.ReportAllocs()
			for b.Loop() {
				inst, err := cp.Instance(ctx, sdk.PluginInstanceConfig{ModuleConfig: wazero.NewModuleConfig()})
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := inst.CallWithContext(ctx, p.handler, in); err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}
