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
// Three sides: wasmvisor, this package with its default call timeout (benchTimeout), enforced
// by the watchdog and the guest's safe points; sdk, the SDK with the same timeout in its
// manifest (timeout_ms: a context.WithTimeout per call on a runtime built
// WithCloseOnContextDone, so a goroutine per call in wazero); and sdk-default, the SDK with
// its defaults (no timeout, a runtime that does not watch contexts: calls unbounded). The
// goal is wasmvisor no slower than sdk-default on a warm instance: a deadline for free.
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
		b.Run(p.file+"/sdk-default", func(b *testing.B) {
			manifest := sdk.Manifest{Wasm: []sdk.Wasm{sdk.WasmData{Data: wasm}}}
			cp, err := sdk.NewCompiledPlugin(ctx, manifest, sdk.PluginConfig{EnableWasi: true}, nil)
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
