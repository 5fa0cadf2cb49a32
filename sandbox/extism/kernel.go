package extism

import (
	"context"
	"fmt"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/api"

	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// Calls into the Extism kernel, without a new function per call.
//
// The kernel (the SDK's extism-runtime.wasm, one instance per plugin instance) keeps a
// plugin's input, output, vars and memory blocks; the guest reaches it through the imports of
// KernelModule: alloc, load_u8, output_set and the like, dozens of calls in a plugin call.
// The SDK serves each with a Go function that looks the kernel function up again,
// (api.Module).ExportedFunction, which in wazero makes a new call engine with a stack of its
// own (10 KiB, zeroed): most of what a small plugin call costs, and the garbage of it.
//
// Compile redirects those imports of the guest (kernelFuncs: not the ones the SDK serves in
// Go, which do not call the kernel) to kernelNamespace, served by functions of this package
// that look each kernel function up once per instance and call it with the same stack. The
// kernel and the calls are the SDK's own; only the lookup is not repeated. The functions find
// their instance's cache through the call's context (kernelKey, set by CallAppend), or, on a
// context without one, look the function up as the SDK does.
//
// Rejected: calling the SDK's Plugin methods (the same lookup), and serving the kernel's
// functions in Go (a second implementation of the kernel's allocator and blocks to keep in
// step with the SDK's).

// kernelNamespace is the import module the kernel's functions are redirected to. The colon
// keeps it apart from any module a guest toolchain names; checkImports refuses a guest that
// imports from it itself.
const kernelNamespace = wasmbin.ReservedPrefix + "extism-kernel"

// kernelFuncs are the kernel functions the SDK serves by calling the kernel, with their types.
var kernelFuncs = [...]struct {
	name            string
	params, results []sdk.ValueType
}{
	{"alloc", i64s(1), i64s(1)},
	{"free", i64s(1), nil},
	{"load_u8", i64s(1), []sdk.ValueType{sdk.ValueTypeI32}},
	{"input_load_u8", i64s(1), []sdk.ValueType{sdk.ValueTypeI32}},
	{"store_u8", []sdk.ValueType{sdk.ValueTypeI64, sdk.ValueTypeI32}, nil},
	{"input_set", i64s(2), nil},
	{"output_set", i64s(2), nil},
	{"input_length", nil, i64s(1)},
	{"input_offset", nil, i64s(1)},
	{"output_length", nil, i64s(1)},
	{"output_offset", nil, i64s(1)},
	{"length", i64s(1), i64s(1)},
	{"length_unsafe", i64s(1), i64s(1)},
	{"reset", nil, nil},
	{"error_set", i64s(1), nil},
	{"error_get", nil, i64s(1)},
	{"memory_bytes", nil, i64s(1)},
}

func i64s(n int) []sdk.ValueType {
	t := make([]sdk.ValueType, n)
	for i := range t {
		t[i] = sdk.ValueTypeI64
	}
	return t
}

// kernelIndex maps a kernel function's name to its place in kernelFuncs.
var kernelIndex = func() map[string]int {
	m := make(map[string]int, len(kernelFuncs))
	for i, f := range kernelFuncs {
		m[f.name] = i
	}
	return m
}()

// redirectKernel is the rename of wasmbin.RenameImports that sends the guest's imports of
// kernelFuncs to kernelNamespace.
func redirectKernel(module, name string) (string, bool) {
	if _, ok := kernelIndex[name]; ok && module == KernelModule {
		return kernelNamespace, true
	}
	return "", false
}

// kernelKey is the context key of an instance's *kernel.
type kernelKey struct{}

// kernel is an instance's cache of its kernel's functions, filled on first use. It is used
// by the instance's calls only, one at a time.
type kernel struct {
	fns [len(kernelFuncs)]api.Function
}

// kernelFunctions makes the host functions of kernelNamespace.
func kernelFunctions() []sdk.HostFunction {
	fns := make([]sdk.HostFunction, len(kernelFuncs))
	for i, f := range kernelFuncs {
		fns[i] = sdk.NewHostFunctionWithStack(f.name, callKernel(i), f.params, f.results)
		fns[i].SetNamespace(kernelNamespace)
	}
	return fns
}

// callKernel serves kernel function i: it calls the kernel's own, with the guest's stack.
func callKernel(i int) sdk.HostFunctionStackCallback {
	name := kernelFuncs[i].name
	return func(ctx context.Context, _ *sdk.CurrentPlugin, stack []uint64) {
		k, _ := ctx.Value(kernelKey{}).(*kernel)
		var f api.Function
		if k != nil {
			f = k.fns[i]
		}
		if f == nil {
			km, ok := ctx.Value(sdk.PluginCtxKey("extism")).(api.Module)
			if !ok {
				panic(fmt.Sprintf("extism: kernel function %q called outside a plugin call", name))
			}
			if f = km.ExportedFunction(name); f == nil {
				panic(fmt.Sprintf("extism: the kernel has no function %q", name))
			}
			if k != nil {
				k.fns[i] = f
			}
		}
		if err := f.CallWithStack(ctx, stack); err != nil {
			panic(err)
		}
	}
}
