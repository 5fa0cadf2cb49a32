package wasmbin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// seeds are small modules from the repository, built by every toolchain the project uses.
var seeds = []string{
	"../../../plugins/reference/reference.wasm",
	"../../../plugins/conformance/c/conformance.wasm",
	"../../../plugins/conformance/rust/conformance.wasm",
	"../../../plugins/conformance/assemblyscript/conformance.wasm",
	"../../testdata/mini.wasm",
	"../../testdata/noabi.wasm",
	"../../testdata/hang.wasm",
	"testdata/bulk.wasm",
}

func readSeed(t testing.TB, p string) []byte {
	b, err := os.ReadFile(filepath.FromSlash(p))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInstrumentKeepsModulesValid rewrites every seed and every Go plugin, and checks that
// wazero compiles the result and that it exports the added globals.
func TestInstrumentKeepsModulesValid(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, p := range seeds { // Go builds are compiled, instrumented, by the sandbox tests
		t.Run(filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p), func(t *testing.T) {
			m, err := Parse(readSeed(t, p))
			if err != nil {
				t.Fatal(err)
			}
			out, err := Instrument(m, 100)
			if err != nil {
				t.Fatal(err)
			}
			code, err := rt.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("instrumented module does not compile: %v", err)
			}
			defer code.Close(ctx)
			re, err := Parse(out)
			if err != nil {
				t.Fatalf("instrumented module does not parse: %v", err)
			}
			exports := map[string]byte{}
			for _, ex := range re.Exports {
				exports[ex.Name] = ex.Kind
			}
			for _, name := range []string{ExportInterrupt, ExportGrowFailed} {
				if exports[name] != KindGlobal {
					t.Errorf("missing global export %q", name)
				}
			}
			if len(re.Funcs) < len(m.Funcs)+2 || mutableGlobals(re) != mutableGlobals(m)+3 {
				t.Errorf("added %d functions and %d mutable globals, want 2 or more and 3", len(re.Funcs)-len(m.Funcs), mutableGlobals(re)-mutableGlobals(m))
			}
			if re.NumGlobals > m.NumGlobals+3 { // fewer when constant globals are folded
				t.Errorf("%d globals, %d before", re.NumGlobals, m.NumGlobals)
			}
			for _, mem := range code.ExportedMemories() {
				if max, ok := mem.Max(); !ok || max > 100 {
					t.Errorf("memory max = %d, %v; want ≤ 100", max, ok)
				}
			}
			// Instrumenting twice gives the same bytes: the rewrite is deterministic.
			again, _ := Instrument(m, 100)
			if string(again) != string(out) {
				t.Error("Instrument is not deterministic")
			}
		})
	}
}

// mutableGlobals counts the mutable globals a module defines.
func mutableGlobals(m *Module) int {
	n := 0
	for _, g := range m.Globals {
		if g.Mutable {
			n++
		}
	}
	return n
}

func TestInstrumentLimits(t *testing.T) {
	m, err := Parse(readSeed(t, "../../../plugins/reference/reference.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Instrument(m, 1); !errors.Is(err, ErrMinAboveLimit) {
		t.Errorf("limit below the minimum: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	ref := readSeed(t, "../../../plugins/reference/reference.wasm")
	for name, b := range map[string][]byte{
		"empty":          nil,
		"bad magic":      []byte("\x00asn\x01\x00\x00\x00"),
		"version 2":      []byte("\x00asm\x02\x00\x00\x00"),
		"truncated":      ref[:len(ref)/2],
		"section past":   []byte("\x00asm\x01\x00\x00\x00\x01\x7f"),
		"unknown id":     []byte("\x00asm\x01\x00\x00\x00\x0e\x00"),
		"out of order":   []byte("\x00asm\x01\x00\x00\x00\x03\x01\x00\x01\x01\x00"),
		"huge count":     []byte("\x00asm\x01\x00\x00\x00\x01\x05\xff\xff\xff\xff\x0f"),
		"long leb":       []byte("\x00asm\x01\x00\x00\x00\x01\x06\x80\x80\x80\x80\x80\x00"),
		"bodies missing": []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
}

// maxFuzzInput keeps each fuzz run fast: wazero's compiler under the fuzzer's coverage
// instrumentation takes seconds on the larger seeds.
const maxFuzzInput = 8 << 10

// FuzzInstrument checks, for any bytes, that Parse, Instrument and InstrumentSnapshot never
// panic, that wazero's decoder survives whatever Parse accepts, and that whenever wazero
// accepts a module with one memory it also accepts both its instrumented copies.
func FuzzInstrument(f *testing.F) {
	for _, p := range seeds {
		if b := readSeed(f, p); len(b) <= maxFuzzInput {
			f.Add(b)
		}
	}
	f.Add(foldModule()) // constant globals of every type to fold, around kept ones
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxFuzzInput {
			return // the large builds are covered by TestInstrumentKeepsModulesValid
		}
		m, perr := Parse(b)
		if perr != nil {
			// The sandbox hands wazero nothing that Parse refused: wazero's decoder can be
			// made to allocate without bound by counts that Parse checks.
			return
		}
		code, cerr := rt.CompileModule(ctx, b)
		if cerr == nil {
			defer code.Close(ctx)
		}
		out, err := Instrument(m, 64)
		if err != nil {
			return // one memory only, and its minimum within the limit
		}
		if cerr != nil {
			return // the original was invalid: no promise about the copy
		}
		code2, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("wazero accepts the module but not its instrumented copy: %v", err)
		}
		code2.Close(ctx)
		snap, _, err := InstrumentSnapshot(m, 64)
		if err != nil {
			t.Fatalf("Instrument accepts the module but not InstrumentSnapshot: %v", err)
		}
		code3, err := rt.CompileModule(ctx, snap)
		if err != nil {
			t.Fatalf("wazero accepts the module but not its copy for snapshots: %v", err)
		}
		code3.Close(ctx)
	})
}
