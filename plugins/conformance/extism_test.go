package conformance_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
)

// extismCase is one call to the Extism conformance plugin (extism/conformance.c): the
// "host functions" case of the table with Extism's semantics. A host function's error has no
// way back to an Extism guest: it ends the call, and the instance, with an
// *extism.HostFuncError naming the function.
type extismCase struct {
	handler, input, out string
	failed              string // the host function whose failure ends the call
}

var extismCases = []extismCase{
	{handler: "kv_get", input: "alice", out: "v:alice"},
	{handler: "kv_get", input: "", out: "v:"},
	{handler: "big", out: strings.Repeat("b", 300_000)},
	{handler: "echo", input: "still serving", out: "still serving"},
	{handler: "fails", input: "x", failed: "fails"},
}

// extismGrants grants the three functions the plugin imports; "secret" stays offered only.
var extismGrants = sandbox.Capabilities{HostFunctions: []string{"kv.get", "fails", "big"}}

func readExtism(t *testing.T) []byte {
	t.Helper()
	wasm, err := os.ReadFile("extism/conformance.wasm")
	if err != nil {
		t.Fatalf("the Extism conformance plugin is missing: %v", err)
	}
	return wasm
}

// runExtismCases runs extismCases in order on one instance through call, then checks that the
// instance has ended after the failure.
func runExtismCases(t *testing.T, call func(handler, input string) ([]byte, error)) {
	t.Helper()
	for _, c := range extismCases {
		out, err := call(c.handler, c.input)
		if c.failed == "" {
			if err != nil || string(out) != c.out {
				t.Fatalf("%s(%q) = %.40q (%d bytes), %v; want %.40q", c.handler, c.input, out, len(out), err, c.out)
			}
			continue
		}
		var he *extism.HostFuncError
		if !errors.As(err, &he) || he.Name != c.failed || he.Err.Error() != "no such key" || !sandbox.Fatal(err) {
			t.Fatalf("%s(%q): %v, want a fatal *extism.HostFuncError naming %q", c.handler, c.input, err, c.failed)
		}
	}
}

// TestExtismHostFunctions runs the host-function cases through an engine with the Extism
// format registered, as the native table does for the other languages.
func TestExtismHostFunctions(t *testing.T) {
	ctx := context.Background()
	eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir), sandbox.WithFormats(extism.Format()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(ctx) })
	wasm := readExtism(t)
	code, err := eng.Load(ctx, wasm, sandbox.Config{HostFuncs: hostFuncs, Capabilities: extismGrants})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer code.Close(ctx)
	if code.Format() != extism.Name || strings.Join(code.Handlers(), " ") != "big echo fails kv_get" {
		t.Fatalf("format %q, handlers %v", code.Format(), code.Handlers())
	}
	inst, err := code.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	runExtismCases(t, func(h, in string) ([]byte, error) { return inst.CallAppend(ctx, h, []byte(in), nil) })
	if _, err := inst.CallAppend(ctx, "echo", []byte("x"), nil); !errors.As(err, new(*sandbox.UnavailableError)) {
		t.Fatalf("after the failure: %v, want the instance ended", err)
	}

	// An import that is not granted is refused at load, named: the guest cannot ask for it
	// at run time, as a native guest's host_fn can.
	_, err = eng.Load(ctx, wasm, sandbox.Config{HostFuncs: hostFuncs,
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"kv.get", "big"}}})
	if !errors.Is(err, sandbox.ErrInvalidConfig) || !strings.Contains(err.Error(), `"extism:host/user"."fails"`) {
		t.Fatalf("without the grant of fails: %v", err)
	}
}

// TestExtismHostFunctionsInHost runs the same cases through a host with the Extism format and
// host functions offered by host.WithHostFunctions.
func TestExtismHostFunctionsInHost(t *testing.T) {
	ctx := context.Background()
	h, err := host.New(ctx, host.WithCacheDir(cacheDir), host.WithFormats(extism.Format()), host.WithHostFunctions(hostFuncs...))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	if err := h.Load(ctx, host.Plugin{Name: "extism", Wasm: readExtism(t), Capabilities: extismGrants}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if info, err := h.Plugin("extism"); err != nil || info.Format != host.FormatExtism ||
		info.Snapshot || !strings.Contains(info.SnapshotOff, "extism format") {
		t.Fatalf("plugin info: %+v, %v", info, err)
	}
	runExtismCases(t, func(hd, in string) ([]byte, error) { return h.Call(ctx, "extism", hd, []byte(in)) })

	// Denied by default: without a grant, the plugin does not load.
	err = h.Load(ctx, host.Plugin{Name: "ungranted", Wasm: readExtism(t)})
	if !errors.Is(err, sandbox.ErrInvalidConfig) || !strings.Contains(err.Error(), `"extism:host/user"."kv.get"`) {
		t.Fatalf("without grants: %v", err)
	}
}
