package sandbox_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
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
	// Every import of the ABI, doing nothing (results zero), so that any plugin links.
	hb := rt.NewHostModuleBuilder(abi.ImportModule)
	for name, sig := range abi.Imports() {
		vt := func(ts []abi.ValType) []api.ValueType {
			out := make([]api.ValueType, len(ts))
			for k, t := range ts {
				out[k] = api.ValueType(t)
			}
			return out
		}
		results := len(sig.Results)
		nop := api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) { clear(stack[:results]) })
		hb = hb.NewFunctionBuilder().WithGoModuleFunction(nop, vt(sig.Params), vt(sig.Results)).Export(name)
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	return rt
}

// heldMemory backs a bare-wazero instance's linear memory through wazero's experimental
// MemoryAllocator hook, the means sandbox/memory.go uses, so that the baseline holds the
// memory's current []byte as the sandbox does and reaches guest memory by slicing it, with
// no api.Memory interface call. It is a plain Go slice grown by copying (the sandbox's
// fallback where it cannot reserve address space); the echo never grows the memory, so the
// bytes touched per call are the same either way.
type heldMemory struct {
	buf []byte // cap(buf) == len(buf), as wazero sees it
	max uint64
}

// Allocate implements experimental.MemoryAllocator.
func (m *heldMemory) Allocate(capacity, limit uint64) experimental.LinearMemory {
	m.max = limit
	m.buf = make([]byte, 0, min(capacity, limit))
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *heldMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		m.buf = append(m.buf[:cap(m.buf)], make([]byte, size-uint64(cap(m.buf)))...)
	}
	m.buf = m.buf[:size:size]
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *heldMemory) Free() {}

// span is the sandbox's bounds-checked view of guest memory [ptr, ptr+n).
func (m *heldMemory) span(ptr, n uint32) ([]byte, bool) {
	end := uint64(ptr) + uint64(n)
	if end > uint64(len(m.buf)) {
		return nil, false
	}
	return m.buf[ptr:end:end], true
}

// rawEcho is the reference plugin's echo through bare wazero, doing what the sandbox does
// for one call: copy the input into the guest's buffer, call, read the control block, copy
// the output out. do reaches guest memory as the sandbox does, through the buffer it holds
// (heldMemory); doAPI goes through api.Memory, as the baseline did before issue 11.
type rawEcho struct {
	mod   api.Module
	call  api.Function
	lm    heldMemory
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
	r := &rawEcho{}
	mod, err := rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, &r.lm), code, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		b.Fatal(err)
	}
	res, err := mod.ExportedFunction("wasmvisor_init").Call(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r.mod, r.call, r.ctrl = mod, mod.ExportedFunction("wasmvisor_call"), uint32(res[0])
	r.inPtr, _ = mod.Memory().ReadUint32Le(r.ctrl + abi.CtrlInPtr)
	return r
}

var errRawEcho = errors.New("raw echo: control block or buffer out of memory")

// do is one echo with the sandbox's memory accesses: the input buffer's pointer and
// capacity read from the control block, the input copied in, the output's pointer and length
// read from it after the call, the output appended to dst; all through the held buffer,
// bounds-checked.
func (r *rawEcho) do(ctx context.Context, in, dst []byte) ([]byte, error) {
	b, ok := r.lm.span(r.ctrl+abi.CtrlInPtr, 8)
	if !ok || uint64(len(in)) > uint64(binary.LittleEndian.Uint32(b[4:])) {
		return dst, errRawEcho
	}
	w, ok := r.lm.span(binary.LittleEndian.Uint32(b), uint32(len(in)))
	if !ok {
		return dst, errRawEcho
	}
	copy(w, in)
	r.stack[0], r.stack[1] = 0, uint64(len(in)) // handler 0: echo
	if err := r.call.CallWithStack(ctx, r.stack[:]); err != nil {
		return dst, err
	}
	if hdr, ok := r.lm.span(r.ctrl+abi.CtrlOutPtr, 8); ok {
		if out, ok := r.lm.span(binary.LittleEndian.Uint32(hdr), binary.LittleEndian.Uint32(hdr[4:])); ok {
			return append(dst, out...), nil
		}
	}
	return dst, errRawEcho
}

// doAPI is the pre-issue-11 baseline: the same echo through the api.Memory interface, with
// the input pointer read once at instantiation.
func (r *rawEcho) doAPI(ctx context.Context, in, dst []byte) ([]byte, error) {
	mem := r.mod.Memory()
	mem.Write(r.inPtr, in)
	r.stack[0], r.stack[1] = 0, uint64(len(in)) // handler 0: echo
	if err := r.call.CallWithStack(ctx, r.stack[:]); err != nil {
		return dst, err
	}
	hdr, _ := mem.Read(r.ctrl+abi.CtrlOutPtr, 8)
	out, _ := mem.Read(binary.LittleEndian.Uint32(hdr), binary.LittleEndian.Uint32(hdr[4:]))
	return append(dst, out...), nil
}

var input64 = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

// BenchmarkCall64 is a 64-byte echo: bare wazero with and without its own deadline
// machinery, and the sandbox with and without a deadline.
//
// The bare-wazero baselines reach guest memory as the sandbox does, through the []byte they
// hold by wazero's MemoryAllocator hook (rawEcho.do); wazero-apimemory is the baseline before
// issue 11, through the api.Memory interface (rawEcho.doAPI), kept for comparison.
//
// The -cancelctx variants are the path every HTTP request takes: each call gets its own
// context.WithCancel (as net/http gives each request one) and cancels it after the call. The
// sandbox publishes such a context to its watchdog; bare wazero's equivalent mechanism is
// WithCloseOnContextDone, which watches the context for the duration of the call.
func BenchmarkCall64(b *testing.B) {
	ctx := context.Background()
	check := func(b *testing.B, out []byte) {
		if string(out) != string(input64) {
			b.Fatalf("echo = %q", out)
		}
	}
	raw := func(b *testing.B, r *rawEcho, do func(*rawEcho, context.Context, []byte, []byte) ([]byte, error), cancelCtx bool) {
		dst := make([]byte, 0, 64)
		var err error
		for b.Loop() {
			if !cancelCtx {
				dst, err = do(r, ctx, input64, dst[:0])
			} else {
				cctx, cancel := context.WithCancel(ctx)
				dst, err = do(r, cctx, input64, dst[:0])
				cancel()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		check(b, dst)
	}
	b.Run("wazero", func(b *testing.B) {
		raw(b, newRawEcho(b, rawRuntime(b, false)), (*rawEcho).do, false)
	})
	b.Run("wazero-apimemory", func(b *testing.B) {
		raw(b, newRawEcho(b, rawRuntime(b, false)), (*rawEcho).doAPI, false)
	})
	b.Run("wazero-instrumented", func(b *testing.B) {
		// The same module with the sandbox's safe points (sandbox/internal/wasmbin): their cost alone.
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
		raw(b, newRawEchoCode(b, rt, code), (*rawEcho).do, false)
	})
	b.Run("wazero-closeOnDone-nodeadline", func(b *testing.B) {
		raw(b, newRawEcho(b, rawRuntime(b, true)), (*rawEcho).do, false)
	})
	b.Run("wazero-closeOnDone-deadline", func(b *testing.B) {
		r := newRawEcho(b, rawRuntime(b, true))
		dst := make([]byte, 0, 64)
		var err error
		for b.Loop() {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			dst, err = r.do(cctx, input64, dst[:0])
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
		check(b, dst)
	})
	b.Run("wazero-closeOnDone-cancelctx", func(b *testing.B) {
		raw(b, newRawEcho(b, rawRuntime(b, true)), (*rawEcho).do, true)
	})
	for _, c := range []struct {
		name      string
		timeout   time.Duration
		cancelCtx bool
	}{
		{"sandbox-nodeadline", sandbox.NoTimeout, false},
		{"sandbox-deadline", time.Second, false},
		{"sandbox-nodeadline-cancelctx", sandbox.NoTimeout, true},
		{"sandbox-deadline-cancelctx", time.Second, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEngine(b)
			i := instantiate(b, compile(b, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: c.timeout}}), nil)
			dst := make([]byte, 0, 64)
			var err error
			for b.Loop() {
				if !c.cancelCtx {
					dst, err = i.CallAppend(ctx, "echo", input64, dst[:0])
				} else {
					cctx, cancel := context.WithCancel(ctx)
					dst, err = i.CallAppend(cctx, "echo", input64, dst[:0])
					cancel()
				}
				if err != nil {
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
// Instantiate (which also runs wasmvisor_init, reads the control block and pushes config),
// for the reference plugin and the conformance plugin of every other language.
//
// The sandbox starts instances from the module's snapshot (sandbox-snapshot, the default:
// RATIONALE.md, "Snapshots") or runs the start sequence in each (sandbox-nosnapshot,
// WithSnapshots(false)). The two sides do not allocate memory alike. Bare wazero makes every
// instance a new linear memory on the Go heap (wazero-freshmemory). The sandbox recycles the
// linear memories of closed instances for the module's next ones;
// sandbox-nosnapshot-freshmemory turns that off (StopRecyclingMemories, a test-only switch),
// so that each instance reserves and faults in a new memory.
func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	for _, p := range []struct{ name, path string }{
		{"reference", referencePath}, {"go", goPluginPath},
		{"c", "../plugins/conformance/c/conformance.wasm"},
		{"rust", "../plugins/conformance/rust/conformance.wasm"},
		{"assemblyscript", "../plugins/conformance/assemblyscript/conformance.wasm"},
	} {
		b.Run(p.name+"/wazero-freshmemory", func(b *testing.B) {
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
		for _, v := range []struct {
			name          string
			snap, recycle bool
		}{{"/sandbox-snapshot", true, true}, {"/sandbox-nosnapshot", false, true}, {"/sandbox-nosnapshot-freshmemory", false, false}} {
			b.Run(p.name+v.name, func(b *testing.B) {
				m := compile(b, newEngine(b, sandbox.WithSnapshots(v.snap)), p.path, sandbox.Config{})
				if !v.recycle {
					sandbox.StopRecyclingMemories(m)
				}
				for b.Loop() {
					i, err := m.Instantiate(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					_ = i.Close(ctx)
				}
			})
		}
		// The measure: a fresh instance, one call (a 64-byte echo), closed. The first
		// call of a restored instance pays for the pages it touches (copy-on-write faults
		// when the image is mapped), which Instantiate alone does not show.
		// -norecycle: instances not recycled (WithRecycling(false)), each made by wazero.
		for _, v := range []struct {
			name          string
			snap, recycle bool
		}{{"/sandbox-snapshot+call", true, true}, {"/sandbox-snapshot-norecycle+call", true, false}, {"/sandbox-nosnapshot+call", false, true}} {
			b.Run(p.name+v.name, func(b *testing.B) {
				m := compile(b, newEngine(b, sandbox.WithSnapshots(v.snap), sandbox.WithRecycling(v.recycle)), p.path, sandbox.Config{})
				for b.Loop() {
					i, err := m.Instantiate(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := i.CallAppend(ctx, "echo", make([]byte, 64), nil); err != nil {
						b.Fatal(err)
					}
					_ = i.Close(ctx)
				}
			})
		}
	}
}
