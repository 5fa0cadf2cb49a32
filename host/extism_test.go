package host_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// An Extism-PDK plugin runs under the same pool, supervisor and restart rules: a fatal
// error replaces the instance, and the successor starts fresh.
func TestExtismPluginUnderSupervision(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, host.WithFormats(extism.Format()))
	ctx := context.Background()
	if err := h.Load(ctx, host.Plugin{Name: "vowels", Wasm: extismtest.Read(t, "count_vowels.wasm")}); err != nil {
		t.Fatal(err)
	}
	out, err := h.Call(ctx, "vowels", "count_vowels", []byte("hello world"))
	if err != nil || string(out) != `{"count":3,"total":3,"vowels":"aeiouAEIOU"}` {
		t.Fatalf("count_vowels = %s, %v", out, err)
	}
	// vars persist within an incarnation: total grows.
	out, _ = h.Call(ctx, "vowels", "count_vowels", []byte("aaa"))
	if string(out) != `{"count":3,"total":6,"vowels":"aeiouAEIOU"}` {
		t.Fatalf("second call = %s", out)
	}
	if err := h.Reset(ctx, "vowels"); err != nil {
		t.Fatal(err)
	}
	out, err = h.Call(ctx, "vowels", "count_vowels", []byte("aaa"))
	if err != nil || string(out) != `{"count":3,"total":3,"vowels":"aeiouAEIOU"}` {
		t.Fatalf("after Reset = %s, %v; want a fresh total", out, err)
	}

	if err := h.Load(ctx, host.Plugin{Name: "exit", Wasm: extismtest.Read(t, "exit.wasm"), Config: map[string]string{"code": "2"}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.Call(ctx, "exit", "_start", nil)
	var ee *sandbox.ExitError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("exit = %v, want exit code 2", err)
	}
	// The successor serves (and exits again: the plugin does nothing else).
	_, err = h.Call(ctx, "exit", "_start", nil)
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("successor = %v", err)
	}
}

// Without the Extism format an Extism plugin is checked against the native ABI, and refused
// as a module that breaks it.
func TestExtismPluginWithoutFormat(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	err := h.Load(context.Background(), host.Plugin{Name: "vowels", Wasm: extismtest.Read(t, "count_vowels.wasm")})
	var ae *sandbox.ABIError
	if !errors.As(err, &ae) {
		t.Fatalf("Load = %v, want an *ABIError", err)
	}
}
