package wasmbin

import (
	"context"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// The tests of this file build their modules in Go, one section at a time.

// sect is a section: its id, then its entries prefixed by their count.
func sect(id byte, entries ...[]byte) []byte {
	p := appendU32(nil, uint32(len(entries)))
	for _, e := range entries {
		p = append(p, e...)
	}
	return append(appendU32([]byte{id}, uint32(len(p))), p...)
}

// wasmModule joins sections into a module.
func wasmModule(sections ...[]byte) []byte {
	b := []byte(magicVersion)
	for _, s := range sections {
		b = append(b, s...)
	}
	return b
}

// cat joins byte strings: instructions into code, fields into an entry.
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func i32Const(v int32) []byte   { return appendS32([]byte{0x41}, v) }
func globalGet(i uint32) []byte { return appendU32([]byte{0x23}, i) }
func globalSet(i uint32) []byte { return appendU32([]byte{0x24}, i) }

// funcType is a type section entry.
func funcType(params, results []byte) []byte {
	return cat([]byte{0x60}, appendName(nil, string(params)), appendName(nil, string(results)))
}

// global is a global section entry initialised by init (end appended).
func global(valType byte, mutable bool, init ...byte) []byte {
	mut := byte(0)
	if mutable {
		mut = 1
	}
	return append(append([]byte{valType, mut}, init...), 0x0b)
}

// importGlobal is an import section entry for an immutable global env.name.
func importGlobal(name string, valType byte) []byte {
	return cat(appendName(nil, "env"), appendName(nil, name), []byte{KindGlobal, valType, 0x00})
}

// export is an export section entry.
func export(name string, kind byte, idx uint32) []byte {
	return cat(appendName(nil, name), []byte{kind}, appendU32(nil, idx))
}

// body is a code section entry without locals; end is appended.
func body(code ...byte) []byte {
	b := append(append([]byte{0x00}, code...), 0x0b)
	return append(appendU32(nil, uint32(len(b))), b...)
}

// oneMemory is a memory section with one memory of one page.
var oneMemory = sect(secMemory, []byte{0x00, 0x01})

// TestInstrumentRefusesGlobalsOutOfRange: a reference to a global the module does not have
// is refused, since after the additions it would name the fuel or interrupt global.
func TestInstrumentRefusesGlobalsOutOfRange(t *testing.T) {
	types := sect(secType, funcType(nil, []byte{0x7f}))
	imports := sect(secImport, importGlobal("g", 0x7f))
	funcs := sect(secFunction, []byte{0x00})
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	// In range, the same module is instrumented and runs.
	m, err := Parse(wasmModule(types, imports, funcs, oneMemory, sect(secExport, export("f", KindFunc, 0)),
		sect(secCode, body(globalGet(0)...))))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := Instrument(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	instantiateEnv(t, rt, 5)
	if got := runI32(t, rt, bin, "f"); got != 5 {
		t.Fatalf("f = %d, want 5", got)
	}
	for name, bin := range map[string][]byte{
		// global 1 is past the one imported global: the instrumented module's interrupt.
		"global.get": wasmModule(types, imports, funcs, oneMemory, sect(secCode, body(globalGet(1)...))),
		// global 2 of a module without globals is the instrumented module's fuel.
		"global.set": wasmModule(types, funcs, oneMemory,
			sect(secCode, body(cat(i32Const(1<<30), globalSet(2), i32Const(0))...))),
		"export": wasmModule(types, imports, funcs, oneMemory, sect(secExport, export("x", KindGlobal, 1)),
			sect(secCode, body(i32Const(0)...))),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := rt.CompileModule(ctx, bin); err == nil {
				t.Fatal("wazero accepts the module")
			}
			m, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Instrument(m, 0); !errors.Is(err, ErrMalformed) {
				t.Errorf("Instrument: %v, want ErrMalformed", err)
			}
			if _, _, err := InstrumentSnapshot(m, 0); !errors.Is(err, ErrMalformed) {
				t.Errorf("InstrumentSnapshot: %v, want ErrMalformed", err)
			}
		})
	}
}

// instantiateEnv instantiates, in rt, the module env that exports the immutable i32 global
// g = v which the tests' modules import.
func instantiateEnv(t *testing.T, rt wazero.Runtime, v int32) {
	t.Helper()
	env := wasmModule(sect(secGlobal, global(0x7f, false, i32Const(v)...)), sect(secExport, export("g", KindGlobal, 0)))
	if _, err := rt.InstantiateWithConfig(context.Background(), env, wazero.NewModuleConfig().WithName("env")); err != nil {
		t.Fatal(err)
	}
}

// runI32 instantiates bin in rt without a name and returns what its export name returns.
func runI32(t *testing.T, rt wazero.Runtime, bin []byte, name string) int32 {
	t.Helper()
	ctx := context.Background()
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(ctx)
	r, err := mod.ExportedFunction(name).Call(ctx)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return int32(r[0])
}
