// Package conformance runs one cases file of ABI behaviours (cases.yaml, in the format of
// CASES.md) against the conformance plugin built in every guest language, each case in a
// fresh sandbox instance, with identical expected results.
package conformance_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// cacheDir holds compiled code shared by every package's tests (internal/testcache), so that
// each build compiles once per wazero version and machine; a directory of this binary's own
// when no shared one can be keyed safely.
var cacheDir string

func TestMain(m *testing.M) {
	cacheDir = testcache.Dir()
	if cacheDir == "" {
		dir, err := os.MkdirTemp("", "wasmvisor-conformance-")
		if err != nil {
			panic(err)
		}
		cacheDir = dir
		defer os.RemoveAll(dir)
	}
	goleak.VerifyTestMain(m)
}

// languages maps each guest language to its conformance build. Every one must be present.
var languages = []struct{ name, path string }{
	{"wat", "../reference/reference.wasm"},
	{"go", "go/conformance.wasm"},
	{"rust", "rust/conformance.wasm"},
	{"c", "c/conformance.wasm"},
	{"assemblyscript", "assemblyscript/conformance.wasm"},
}

// handlers are the conformance plugin's handlers, in the order every language declares them.
const handlers = "echo config_get config_changes emit publish count gauge observe fail trap loop grow set get exit log stdout host_call"

// hostFuncs are offered to every case's instance; cases.yaml grants all but "secret".
var hostFuncs = []sandbox.HostFunc{
	{Name: "kv.get", Func: func(_ context.Context, in []byte) ([]byte, error) { return append([]byte("v:"), in...), nil }},
	{Name: "fails", Func: func(context.Context, []byte) ([]byte, error) { return nil, errors.New("no such key") }},
	{Name: "big", Func: func(context.Context, []byte) ([]byte, error) { return []byte(strings.Repeat("b", 300_000)), nil }},
	{Name: "secret", Func: func(context.Context, []byte) ([]byte, error) { return []byte("leaked"), nil }},
}

func readCases(t *testing.T) *casetest.File {
	t.Helper()
	r, err := os.Open("cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := casetest.Parse(r)
	if err != nil {
		t.Fatalf("cases.yaml: %v", err)
	}
	return f
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	f := readCases(t)
	for _, lang := range languages {
		// Both ways: every instance restored from its module's snapshot, and every instance
		// running the start sequence itself (RATIONALE.md, "Snapshots").
		for _, snaps := range []bool{true, false} {
			name := lang.name + "/snapshots"
			if !snaps {
				name = lang.name + "/no-snapshots"
			}
			t.Run(name, func(t *testing.T) {
				wasm, err := os.ReadFile(filepath.FromSlash(lang.path))
				if err != nil {
					t.Fatalf("the %s conformance plugin is missing: %v", lang.name, err)
				}
				// One engine per language and way over the shared compilation cache; casetest
				// keeps the code on it for the run, so every case instantiates afresh without
				// compiling.
				eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir), sandbox.WithSnapshots(snaps))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = eng.Close(ctx) })
				checkHandlers(t, eng, wasm, snaps)
				casetest.Run(t, wasm, f, casetest.Options{Engine: eng, HostFuncs: hostFuncs})
			})
		}
	}
}

// checkHandlers checks that the plugin declares the conformance handlers, in order, and
// keeps its code compiled for the cases.
func checkHandlers(t *testing.T, eng *sandbox.Engine, wasm []byte, snaps bool) {
	t.Helper()
	ctx := context.Background()
	mod, err := eng.Compile(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 256}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	// Kept until the test ends: the cases' modules (256 pages too) share its code.
	t.Cleanup(func() { _ = mod.Close(ctx) })
	if on, why := mod.Snapshots(); on != snaps {
		t.Fatalf("Snapshots() = %v (%s), want %v", on, why, snaps)
	}
	inst, err := mod.Instantiate(ctx, nil)
	if err != nil {
		t.Fatalf("Instantiate: %v", err)
	}
	defer inst.Close(ctx)
	if got := strings.Join(inst.Handlers(), " "); got != handlers {
		t.Fatalf("handlers = %s, want %s", got, handlers)
	}
}
