package sandbox_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmvisor/wasmvisor/internal/wasmbin"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// rawRuntime is bare wazero with the imports the plugins need, for the baselines.
func rawRuntime(b *testing.B, closeOnDone bool) wazero.Runtime {
	ctx := context.Background()
	cfg := wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(closeOnDone)
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		b.Fatal(err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, cfg.WithCompilationCache(cache))
	b.Cleanup(func() { _ = rt.Close(ctx); _ = cache.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	nop := api.GoModuleFunc(func(context.Context, api.Module, []uint64) {})
	i32 := api.ValueTypeI32
	if _, err := rt.NewHostModuleBuilder("wasmvisor").
		NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32, i32}, nil).Export("log").
		NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).Export("publish").
		NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32}, nil).Export("abort").
		Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	return rt
}

// rawEcho is the reference plugin's echo through bare wazero, doing what the sandbox does
// for one call: copy the input into the guest's buffer, call, read the control block, copy
// the output out.
type rawEcho struct {
	mod   api.Module
	call  api.Function
	ctrl  uint32
	inPtr uint32
	stack [2]uint64
}

func newRawEcho(b *testing.B, rt wazero.Runtime) *rawEcho {
	ctx := context.Background()
	code, err := rt.CompileModule(ctx, read(b, referencePath))
	if err != nil {
		b.Fatal(err)
	}
	return newRawEchoCode(b, rt, code)
}

func newRawEchoCode(b *testing.B, rt wazero.Runtime, code wazero.CompiledModule) *rawEcho {
	ctx := context.Background()
	mod, err := rt.InstantiateModule(ctx, code, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		b.Fatal(err)
	}
	res, err := mod.ExportedFunction("wasmvisor_init").Call(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r := &rawEcho{mod: mod, call: mod.ExportedFunction("wasmvisor_call"), ctrl: uint32(res[0])}
	r.inPtr, _ = mod.Memory().ReadUint32Le(r.ctrl + 8)
	return r
}

func (r *rawEcho) do(ctx context.Context, in, dst []byte) ([]byte, error) {
	mem := r.mod.Memory()
	mem.Write(r.inPtr, in)
	r.stack[0], r.stack[1] = 0, uint64(len(in)) // handler 0: echo
	if err := r.call.CallWithStack(ctx, r.stack[:]); err != nil {
		return dst, err
	}
	hdr, _ := mem.Read(r.ctrl+16, 8)
	out, _ := mem.Read(binary.LittleEndian.Uint32(hdr), binary.LittleEndian.Uint32(hdr[4:]))
	return append(dst, out...), nil
}

var input64 = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

// BenchmarkCall64 is a 64-byte echo: bare wazero with and without its own deadline
// machinery, and the sandbox with and without a deadline.
func BenchmarkCall64(b *testing.B) {
	ctx := context.Background()
	check := func(b *testing.B, out []byte) {
		if string(out) != string(input64) {
			b.Fatalf("echo = %q", out)
		}
	}
	b.Run("wazero", func(b *testing.B) {
		r := newRawEcho(b, rawRuntime(b, false))
		dst := make([]byte, 0, 64)
		for b.Loop() {
			dst, _ = r.do(ctx, input64, dst[:0])
		}
		check(b, dst)
	})
	b.Run("wazero-instrumented", func(b *testing.B) {
		// The same module with the sandbox's safe points (internal/wasmbin): their cost alone.
		rt := rawRuntime(b, false)
		m, err := wasmbin.Parse(read(b, referencePath))
		if err != nil {
			b.Fatal(err)
		}
		bin, err := wasmbin.Instrument(m, 0)
		if err != nil {
			b.Fatal(err)
		}
		code, err := rt.CompileModule(ctx, bin)
		if err != nil {
			b.Fatal(err)
		}
		r := newRawEchoCode(b, rt, code)
		dst := make([]byte, 0, 64)
		for b.Loop() {
			dst, _ = r.do(ctx, input64, dst[:0])
		}
		check(b, dst)
	})
	b.Run("wazero-closeOnDone-nodeadline", func(b *testing.B) {
		r := newRawEcho(b, rawRuntime(b, true))
		dst := make([]byte, 0, 64)
		for b.Loop() {
			dst, _ = r.do(ctx, input64, dst[:0])
		}
		check(b, dst)
	})
	b.Run("wazero-closeOnDone-deadline", func(b *testing.B) {
		r := newRawEcho(b, rawRuntime(b, true))
		dst := make([]byte, 0, 64)
		for b.Loop() {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			dst, _ = r.do(cctx, input64, dst[:0])
			cancel()
		}
		check(b, dst)
	})
	for _, c := range []struct {
		name    string
		timeout time.Duration
	}{{"sandbox-nodeadline", sandbox.NoTimeout}, {"sandbox-deadline", time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			e := newEngine(b)
			i := instantiate(b, compile(b, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: c.timeout}}), nil)
			dst := make([]byte, 0, 64)
			var err error
			for b.Loop() {
				if dst, err = i.CallAppend(ctx, "echo", input64, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			check(b, dst)
		})
	}
	b.Run("sandbox-deadline-parallel", func(b *testing.B) {
		e := newEngine(b)
		m := compile(b, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: time.Second}})
		b.RunParallel(func(pb *testing.PB) {
			i, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Error(err)
				return
			}
			defer i.Close(ctx)
			dst := make([]byte, 0, 64)
			for pb.Next() {
				if dst, err = i.CallAppend(ctx, "echo", input64, dst[:0]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkInstantiate is a fresh instance, started and closed: bare wazero's
// InstantiateModule (plus _initialize where the module has one) against the sandbox's
// Instantiate (which also runs wasmvisor_init, reads the control block and pushes config).
func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	for _, p := range []struct{ name, path string }{{"reference", referencePath}, {"go", goPluginPath}} {
		b.Run(p.name+"/wazero", func(b *testing.B) {
			rt := rawRuntime(b, false)
			code, err := rt.CompileModule(ctx, read(b, p.path))
			if err != nil {
				b.Fatal(err)
			}
			cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize")
			for b.Loop() {
				m, err := rt.InstantiateModule(ctx, code, cfg)
				if err != nil {
					b.Fatal(err)
				}
				_ = m.Close(ctx)
			}
		})
		b.Run(p.name+"/sandbox", func(b *testing.B) {
			m := compile(b, newEngine(b), p.path, sandbox.Config{})
			for b.Loop() {
				i, err := m.Instantiate(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				_ = i.Close(ctx)
			}
		})
	}
}
