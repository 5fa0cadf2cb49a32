package extism

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// TestKernelImportsRedirected checks the rewrite: the guest imports the kernel functions of
// kernelFuncs from kernelNamespace, and the rest of KernelModule (served by the SDK in Go)
// from KernelModule still; a guest that imports from kernelNamespace itself is refused.
func TestKernelImportsRedirected(t *testing.T) {
	wasm := extismtest.Read(t, "count_vowels.wasm")
	bin, err := instrument(wasm)
	if err != nil {
		t.Fatal(err)
	}
	m, err := wasmbin.Parse(bin)
	if err != nil {
		t.Fatal(err)
	}
	redirected, kept := 0, 0
	for _, im := range m.Imports {
		_, isKernel := kernelIndex[im.Name]
		switch {
		case im.Module == kernelNamespace && isKernel:
			redirected++
		case im.Module == KernelModule && !isKernel:
			kept++
		case im.Module == kernelNamespace || im.Module == KernelModule:
			t.Errorf("import %q.%q", im.Module, im.Name)
		}
	}
	if redirected == 0 || kept == 0 {
		t.Fatalf("%d imports redirected, %d kept; want some of each", redirected, kept)
	}
	_, err = Compile(context.Background(), bin, sandbox.Config{})
	if !errors.Is(err, sandbox.ErrInvalidModule) || !strings.Contains(err.Error(), kernelNamespace) {
		t.Fatalf("a guest importing %s itself: %v", kernelNamespace, err)
	}
}

// TestKernelLookedUpOnce calls a plugin twice and checks that the instance's kernel
// functions were looked up by the first call and kept by the second: the same functions,
// not new ones per call.
func TestKernelLookedUpOnce(t *testing.T) {
	ctx := context.Background()
	m, err := Compile(ctx, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close(ctx)
	if _, err := i.Call(ctx, "count_vowels", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	first := i.kernel.fns
	n := 0
	for _, f := range first {
		if f != nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no kernel function was looked up")
	}
	if out, err := i.Call(ctx, "count_vowels", []byte("hello again")); err != nil || !strings.Contains(string(out), `"count":5`) {
		t.Fatalf("second call: %q, %v", out, err)
	}
	for k, f := range i.kernel.fns {
		if first[k] != nil && f != first[k] {
			t.Errorf("kernel function %q looked up again", kernelFuncs[k].name)
		}
	}
	t.Logf("%d of %d kernel functions used", n, len(kernelFuncs))
}
