package wasmbin

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

func i64Const(v int64) []byte { return appendS64([]byte{0x42}, v) }

// Constants of foldModule whose bits must survive the fold: a signalling f32 NaN with a
// payload, a negative f64 NaN with a payload, and a v128 whose lanes differ.
const (
	foldF32Bits = 0x7fa00001
	foldF64Bits = 0xfff8000000000123
	foldI64     = -1234567890123
)

// foldModule imports env.g (global 0, an i32) and defines:
//
//	1 i32 7                 folded
//	2 mut i32 100           moves to 1, exported as "counter"
//	3 i64 foldI64           folded
//	4 f32 foldF32Bits       folded
//	5 f64 foldF64Bits       folded
//	6 v128 bytes 0..15      folded
//	7 i32 42                exported as "k": stays, moves to 2
//	8 mut i64 9             moves to 3
//	9 i32 11                folded (its LEB128 padded to five bytes)
//
// Its functions read them all; bump and bump64 also write the mutable ones.
func foldModule() []byte {
	v128 := []byte{0xfd, 12}
	for i := range 16 {
		v128 = append(v128, byte(i))
	}
	f32 := binary.LittleEndian.AppendUint32([]byte{0x43}, foldF32Bits)
	f64 := binary.LittleEndian.AppendUint64([]byte{0x44}, foldF64Bits)
	i32, i64 := []byte{0x7f}, []byte{0x7e}
	fns := []struct {
		name    string
		results []byte
		code    []byte
	}{
		{"get", i32, cat(globalGet(1), globalGet(0), []byte{0x6a}, globalGet(9), []byte{0x6a}, globalGet(7), []byte{0x6a})},
		{"i64", i64, globalGet(3)},
		{"f32", i32, cat(globalGet(4), []byte{0xbc})},         // i32.reinterpret_f32
		{"f64", i64, cat(globalGet(5), []byte{0xbd})},         // i64.reinterpret_f64
		{"v128", i64, cat(globalGet(6), []byte{0xfd, 29, 1})}, // i64x2.extract_lane 1
		{"bump", i32, cat(globalGet(2), i32Const(1), []byte{0x6a}, globalSet(2), globalGet(2))},
		{"bump64", i64, cat(globalGet(8), globalGet(3), []byte{0x7c}, globalSet(8), globalGet(8))},
	}
	types := sect(secType, funcType(nil, i32), funcType(nil, i64))
	var decls, bodies, exports [][]byte
	for k, fn := range fns {
		typeIdx := byte(0)
		if fn.results[0] == 0x7e {
			typeIdx = 1
		}
		decls = append(decls, []byte{typeIdx})
		bodies = append(bodies, body(fn.code...))
		exports = append(exports, export(fn.name, KindFunc, uint32(k)))
	}
	exports = append(exports, export("counter", KindGlobal, 2), export("k", KindGlobal, 7))
	return wasmModule(types,
		sect(secImport, importGlobal("g", 0x7f)),
		sect(secFunction, decls...),
		oneMemory,
		sect(secGlobal,
			global(0x7f, false, i32Const(7)...),
			global(0x7f, true, i32Const(100)...),
			global(0x7e, false, i64Const(foldI64)...),
			global(0x7d, false, f32...),
			global(0x7c, false, f64...),
			global(0x7b, false, v128...),
			global(0x7f, false, i32Const(42)...),
			global(0x7e, true, i64Const(9)...),
			global(0x7f, false, 0x41, 0x8b, 0x80, 0x80, 0x80, 0x00),
		),
		sect(secExport, exports...),
		sect(secCode, bodies...),
	)
}

// foldCalls are the exports of foldModule, called in this order.
var foldCalls = []string{"get", "i64", "f32", "f64", "v128", "bump", "bump64", "bump", "bump64"}

// runFold instantiates bin and returns what each of foldCalls returned, then what the global
// exports hold.
func runFold(t *testing.T, rt wazero.Runtime, bin []byte) []string {
	t.Helper()
	ctx := context.Background()
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(ctx)
	var got []string
	for _, name := range foldCalls {
		r, err := mod.ExportedFunction(name).Call(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got = append(got, fmt.Sprintf("%s=%#x", name, r[0]))
	}
	for _, name := range []string{"counter", "k"} {
		got = append(got, fmt.Sprintf("%s=%d", name, mod.ExportedGlobal(name).Get()))
	}
	return got
}

// TestFoldConstantGlobals runs foldModule as it is and instrumented both ways: every function
// returns what it returned, the exported constant still reads 42 from outside, the mutable
// globals are read and written at their new indices, the imported one has not moved, and the
// six constant globals are gone from the copies.
func TestFoldConstantGlobals(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	instantiateEnv(t, rt, 5)
	src := foldModule()
	want := runFold(t, rt, src)
	i64 := int64(foldI64)
	if fmt.Sprint(want[:5]) != fmt.Sprintf("[get=%#x i64=%#x f32=%#x f64=%#x v128=%#x]",
		7+5+11+42, uint64(i64), foldF32Bits, uint64(foldF64Bits), 0x0f0e0d0c0b0a0908) {
		t.Fatalf("the original returns %v", want)
	}
	m, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Instrument(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	snapBin, snap, err := InstrumentSnapshot(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, bin := range map[string][]byte{"Instrument": plain, "InstrumentSnapshot": snapBin} {
		t.Run(name, func(t *testing.T) {
			if got := runFold(t, rt, bin); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("instrumented: %v\noriginal:     %v", got, want)
			}
			re, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			// 1 imported, 3 kept, 3 added.
			if re.NumGlobals != 7 || len(re.Globals) != 6 {
				t.Fatalf("%d globals, %d defined; want 7 and 6", re.NumGlobals, len(re.Globals))
			}
		})
	}

	// The snapshot's globals are the mutable ones at their new indices, 1 and 3, and the
	// host reads and writes them through their exports.
	if snap.Why != "" || fmt.Sprint(snap.Globals) != "[1 3]" {
		t.Fatalf("snapshot %+v", snap)
	}
	mod, err := rt.InstantiateWithConfig(ctx, snapBin, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(ctx)
	g := mod.ExportedGlobal(GlobalExport(1)).(api.MutableGlobal)
	g.Set(500)
	if v := callI(t, mod.ExportedFunction("bump")); v != 501 {
		t.Fatalf("bump = %d after the host wrote 500", v)
	}
	if v := mod.ExportedGlobal(GlobalExport(3)).(api.MutableGlobal).Get(); v != 9 {
		t.Fatalf("%s = %d, want 9", GlobalExport(3), v)
	}
}

// TestFoldLeavesInvalidModulesInvalid: a constant global that a constant expression reads,
// that code writes, whose initialiser is of another type or whose mutability byte is neither
// 0 nor 1, is not folded, so that wazero refuses the copy when it refuses the
// original (whatever its features) and runs it the same when it accepts it. wazero reads
// only imported globals in global initialisers and data offsets; in element segments it
// reads defined globals with the extended-const feature only.
func TestFoldLeavesInvalidModulesInvalid(t *testing.T) {
	ctx := context.Background()
	extended := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCoreFeatures(api.CoreFeaturesV2|experimental.CoreFeaturesExtendedConst))
	defer extended.Close(ctx)
	standard := wazero.NewRuntime(ctx)
	defer standard.Close(ctx)

	i32 := []byte{0x7f}
	types := sect(secType, funcType(nil, i32))
	// Global 0 is a constant that only code reads: folded. Global 1 is one that a constant
	// expression reads, or code writes, or invalid: kept.
	globals := sect(secGlobal, global(0x7f, false, i32Const(8)...), global(0x7f, false, i32Const(1)...))
	get := cat(globalGet(0), globalGet(1), []byte{0x6a})
	elemCall := cat(i32Const(1), []byte{0x11, 0x00, 0x00}) // call_indirect type 0 table 0, slot 1
	for _, c := range []struct {
		name         string
		bin          []byte
		extendedRuns int32 // what "f" returns under extended-const; 0: refused there too
	}{
		{"global initialiser", wasmModule(types, sect(secFunction, []byte{0}), oneMemory,
			sect(secGlobal, global(0x7f, false, i32Const(8)...), global(0x7f, false, i32Const(1)...),
				global(0x7f, false, globalGet(1)...)),
			sect(secExport, export("f", KindFunc, 0)), sect(secCode, body(cat(get, globalGet(2), []byte{0x6a})...))), 0},
		{"data offset", wasmModule(types, sect(secFunction, []byte{0}), oneMemory, globals,
			sect(secExport, export("f", KindFunc, 0)), sect(secCode, body(get...)),
			sect(secData, cat([]byte{0x00}, globalGet(1), []byte{0x0b, 1, 'x'}))), 0},
		{"global.set", wasmModule(types, sect(secFunction, []byte{0}), oneMemory, globals,
			sect(secExport, export("f", KindFunc, 0)), sect(secCode, body(cat(i32Const(2), globalSet(1), get)...))), 0},
		// Global 1 is an i64 initialised by an i32.const, and read as an i32.
		{"initialiser of another type", wasmModule(types, sect(secFunction, []byte{0}), oneMemory,
			sect(secGlobal, global(0x7f, false, i32Const(8)...), global(0x7e, false, i32Const(1)...)),
			sect(secExport, export("f", KindFunc, 0)), sect(secCode, body(get...))), 0},
		// Global 1's mutability byte is 2, neither immutable (0) nor mutable (1).
		{"mutability 2", wasmModule(types, sect(secFunction, []byte{0}), oneMemory,
			sect(secGlobal, global(0x7f, false, i32Const(8)...), cat([]byte{0x7f, 0x02}, i32Const(1), []byte{0x0b})),
			sect(secExport, export("f", KindFunc, 0)), sect(secCode, body(get...))), 0},
		// The element segment puts functions 1 and 2 at slots 1 and 2 (global 1): slot 1
		// returns 10. Read at the wrong index (global 1 of the copy is an added global,
		// 0), the segment would start at slot 0, and slot 1 would return 20.
		{"element offset", wasmModule(types, sect(secFunction, []byte{0}, []byte{0}, []byte{0}),
			sect(secTable, []byte{0x70, 0x00, 4}), oneMemory, globals,
			sect(secExport, export("f", KindFunc, 0)),
			sect(secElement, cat([]byte{0x00}, globalGet(1), []byte{0x0b, 2, 1, 2})),
			sect(secCode, body(cat(get, elemCall, []byte{0x6a})...), body(i32Const(10)...), body(i32Const(20)...))), 19},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse(c.bin)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := Instrument(m, 0)
			if err != nil {
				t.Fatal(err)
			}
			snapBin, _, err := InstrumentSnapshot(m, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, bin := range [][]byte{c.bin, plain, snapBin} {
				if _, err := standard.CompileModule(ctx, bin); err == nil {
					t.Fatal("wazero accepts the module without extended-const")
				}
				code, err := extended.CompileModule(ctx, bin)
				if c.extendedRuns == 0 {
					if err == nil {
						t.Fatal("wazero accepts the module with extended-const")
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := runI32(t, extended, bin, "f"); got != c.extendedRuns {
					t.Fatalf("f = %d, want %d", got, c.extendedRuns)
				}
				code.Close(ctx)
			}
			// Global 0 is folded, global 1 stays: one defined global left of two, and three
			// added.
			if re, err := Parse(plain); err != nil || len(re.Globals) != len(m.Globals)-1+3 {
				t.Fatalf("%d globals defined, %d before: %v", len(re.Globals), len(m.Globals), err)
			}
		})
	}
}

// noFoldModule has globals of every kind that is not folded: mutable, exported, initialised
// by an imported global, of a reference type. Its code reads global 1 with a padded LEB128.
func noFoldModule() []byte {
	padded := []byte{0x23, 0x81, 0x80, 0x80, 0x80, 0x00} // global.get 1
	code := cat(globalGet(0), padded, []byte{0x6a}, globalGet(2), []byte{0x6a}, globalGet(3), []byte{0x6a},
		i32Const(1), globalSet(1))
	return wasmModule(
		sect(secType, funcType(nil, []byte{0x7f})),
		sect(secImport, importGlobal("g", 0x7f)),
		sect(secFunction, []byte{0x00}),
		oneMemory,
		sect(secGlobal,
			global(0x7f, true, i32Const(1)...),   // 1: mutable
			global(0x7f, false, i32Const(2)...),  // 2: exported
			global(0x7f, false, globalGet(0)...), // 3: initialised by an imported global
			global(0x70, false, 0xd0, 0x70),      // 4: a funcref
		),
		sect(secExport, export("f", KindFunc, 0), export("k", KindGlobal, 2)),
		sect(secCode, body(code...)),
		sect(secData, cat([]byte{0x00}, globalGet(0), []byte{0x0b, 2, 'h', 'i'})),
	)
}

// TestNoFoldIsByteIdentical: a module with no constant global to fold comes out of both
// rewrites as it did before folding was written (the SHA-256 of each output, taken at
// f3919a9; a deliberate change to the instrumentation changes them), and runs the same.
func TestNoFoldIsByteIdentical(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	instantiateEnv(t, rt, 5)
	src := noFoldModule()
	plain, snapBin, _ := instrumentBoth(t, src)
	for _, c := range []struct {
		name string
		bin  []byte
		sum  string
	}{
		{"Instrument", plain, "f260a3c005c7585945db88cabaf139eb9363f0b10c296a03b8ebdb5d67aa74a4"},
		{"InstrumentSnapshot", snapBin, "44c9eca354dfcff1288669b28a6cf2372be1b99ae2948e871ed12d1fc1707e2c"},
	} {
		if sum := sha256.Sum256(c.bin); hex.EncodeToString(sum[:]) != c.sum {
			t.Errorf("%s: SHA-256 %x, want %s", c.name, sum, c.sum)
		}
		if got := runI32(t, rt, c.bin, "f"); got != 5+1+2+5 {
			t.Errorf("%s: f = %d, want 13", c.name, got)
		}
	}
	if got := runI32(t, rt, src, "f"); got != 13 {
		t.Errorf("the original: f = %d, want 13", got)
	}
}

// TestFoldDropsGlobalNames: the name section of a module whose globals moved loses its
// global names, and keeps the rest; with nothing folded it is kept whole.
func TestFoldDropsGlobalNames(t *testing.T) {
	names := appendName(nil, "name")
	fnNames := cat(appendU32(nil, 1), appendU32(nil, 0), appendName(nil, "the_f")) // function 0: the_f
	globalNames := cat(appendU32(nil, 1), appendU32(nil, 1), appendName(nil, "the_g"))
	for _, sub := range []struct {
		id      byte
		payload []byte
	}{{1, fnNames}, {7, globalNames}} {
		names = append(appendU32(append(names, sub.id), uint32(len(sub.payload))), sub.payload...)
	}
	custom := append(appendU32([]byte{secCustom}, uint32(len(names))), names...)
	for _, c := range []struct {
		name     string
		constant bool // global 0 is a constant, folded
		kept     bool // the global names are kept
	}{{"folded", true, false}, {"none folded", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			src := wasmModule(sect(secType, funcType(nil, []byte{0x7f})), sect(secFunction, []byte{0}), oneMemory,
				sect(secGlobal, global(0x7f, !c.constant, i32Const(3)...), global(0x7f, true, i32Const(4)...)),
				sect(secExport, export("f", KindFunc, 0)),
				sect(secCode, body(cat(globalGet(0), globalGet(1), []byte{0x6a})...)), custom)
			m, err := Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			bin, err := Instrument(m, 0)
			if err != nil {
				t.Fatal(err)
			}
			re, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, s := range re.sections {
				if s.id == secCustom {
					got = s.payload
				}
			}
			want := names
			if !c.kept {
				want = names[:len(names)-len(globalNames)-2]
			}
			if string(got) != string(want) {
				t.Fatalf("name section %x, want %x", got, want)
			}
			ctx := context.Background()
			rt := wazero.NewRuntime(ctx)
			defer rt.Close(ctx)
			code, err := rt.CompileModule(ctx, bin)
			if err != nil {
				t.Fatal(err)
			}
			if fn := code.ExportedFunctions()["f"]; fn.Name() != "the_f" {
				t.Fatalf("function name %q", fn.Name())
			}
			if got := runI32(t, rt, bin, "f"); got != 7 {
				t.Fatalf("f = %d, want 7", got)
			}
		})
	}
}

// elemModule is a module whose element segments (an offset and an initialiser) read a
// defined global, as extended-const allows, next to a constant global that is folded.
func elemModule() []byte {
	get := cat(globalGet(0), globalGet(1), []byte{0x6a}, globalGet(2), []byte{0x6a})
	callSlot := func(slot int32) []byte { return cat(i32Const(slot), []byte{0x11, 0x00, 0x00}) }
	return wasmModule(sect(secType, funcType(nil, []byte{0x7f})),
		sect(secFunction, []byte{0}, []byte{0}, []byte{0}, []byte{0}),
		sect(secTable, []byte{0x70, 0x00, 4}), oneMemory,
		sect(secGlobal, global(0x7f, false, i32Const(8)...), global(0x7f, false, i32Const(1)...),
			global(0x7f, false, i32Const(3)...)),
		sect(secExport, export("f", KindFunc, 0), export("slots", KindFunc, 3)),
		sect(secElement,
			cat([]byte{0x00}, globalGet(1), []byte{0x0b, 2, 1, 2}),           // slots 1, 2
			cat([]byte{0x04}, globalGet(2), []byte{0x0b, 1, 0xd2, 1, 0x0b})), // slot 3: ref.func 1
		sect(secCode, body(get...), body(i32Const(10)...), body(i32Const(20)...),
			body(cat(callSlot(1), callSlot(2), []byte{0x6a}, callSlot(3), []byte{0x6a})...)),
		sect(secData, cat([]byte{0x00}, i32Const(4), []byte{0x0b, 1, 'x'}), []byte{0x01, 1, 'y'}))
}

// TestFoldDifferential mutates foldModule, noFoldModule and elemModule at random (a few
// bytes each time, often into a global.get, global.set, i32.const, end or a small index); see
// differential for what it requires of each mutant.
func TestFoldDifferential(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
		WithCoreFeatures(api.CoreFeaturesV2|experimental.CoreFeaturesExtendedConst))
	defer rt.Close(ctx)
	instantiateEnv(t, rt, 5)
	bases := [][]byte{foldModule(), noFoldModule(), elemModule()}
	if got := runExports(ctx, rt, bases[2]); got != "f: [12] ok; slots: [40] ok" {
		t.Fatalf("elemModule: %s", got)
	}
	c := differential(t, rt, rand.New(rand.NewPCG(7, 11)), bases, 30_000,
		[]byte{0x23, 0x24, 0x41, 0x0b, 0x00, 0x01, 0x02, 0x7f, 0x7e}, true)
	if c.compared < 1000 || c.refused < 1000 {
		t.Fatalf("only %d mutants compared, %d refused", c.compared, c.refused)
	}
}

// mutants counts the mutants of a differential test: those Parse accepts, those wazero accepts
// (with one memory) and whose copy was compared with them, and those wazero refuses, by
// Instrument or, after it, by wazero.
type mutants struct {
	parsed, compared, refused, byInstrument, byWazero int
	panics                                            int // of wazero, on a mutant (counted in refused)
}

// errPanic is compile's error when wazero panicked.
var errPanic = errors.New("wazero panicked")

// compile compiles bin in rt and closes it; a panic of wazero's is errPanic.
func compile(ctx context.Context, rt wazero.Runtime, bin []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	code, err := rt.CompileModule(ctx, bin)
	if err == nil {
		code.Close(ctx)
	}
	return err
}

// differential makes n mutants of bases (one to three bytes changed each: at random, one bit,
// or to a byte of palette) and requires, of every mutant that Parse accepts:
//
//   - if wazero refuses it (or panics on it), that Instrument and InstrumentSnapshot refuse it
//     or wazero refuses their copies (without a panic: the sandbox gives it only copies): the
//     additions must never make an invalid module valid;
//   - if wazero accepts it and it has one memory, that Instrument and InstrumentSnapshot
//     accept it, that wazero accepts both copies, and, with run, that Instrument's copy
//     returns what the original returns from each of its exports without parameters, called
//     in name order, and leaves the same values in the exported globals.
func differential(t *testing.T, rt wazero.Runtime, rng *rand.Rand, bases [][]byte, n int, palette []byte, run bool) mutants {
	t.Helper()
	ctx := context.Background()
	var c mutants
	for k := range n {
		b := slices.Clone(bases[k%len(bases)])
		for range 1 + rng.IntN(3) {
			i := 8 + rng.IntN(len(b)-8)
			switch rng.IntN(3) {
			case 0:
				b[i] = byte(rng.IntN(256))
			case 1:
				b[i] ^= 1 << rng.IntN(8)
			default:
				b[i] = palette[rng.IntN(len(palette))]
			}
		}
		m, err := Parse(b)
		if err != nil {
			continue
		}
		c.parsed++
		if err := compile(ctx, rt, b); err != nil {
			c.refused++
			if errors.Is(err, errPanic) {
				c.panics++
			}
			plain, ierr := Instrument(m, 0)
			snapBin, _, serr := InstrumentSnapshot(m, 0)
			if ierr != nil && serr != nil {
				c.byInstrument++
				continue
			}
			for name, bin := range map[string][]byte{"Instrument": plain, "InstrumentSnapshot": snapBin} {
				if bin == nil {
					continue
				}
				switch cerr := compile(ctx, rt, bin); {
				case cerr == nil:
					t.Fatalf("mutant %d: wazero refuses it (%v) and accepts its copy by %s", k, firstLine(err), name)
				case errors.Is(cerr, errPanic):
					t.Fatalf("mutant %d: wazero refuses it (%v) and panics on its copy by %s: %v", k, firstLine(err), name, cerr)
				}
			}
			c.byWazero++
			continue
		}
		if len(m.Memories) != 1 {
			continue // the sandbox needs one memory: Instrument refuses the others
		}
		plain, err := Instrument(m, 0)
		if err != nil {
			t.Fatalf("mutant %d: wazero accepts it, Instrument refuses it: %v", k, err)
		}
		snapBin, _, err := InstrumentSnapshot(m, 0)
		if err != nil {
			t.Fatalf("mutant %d: wazero accepts it, InstrumentSnapshot refuses it: %v", k, err)
		}
		for name, bin := range map[string][]byte{"Instrument": plain, "InstrumentSnapshot": snapBin} {
			if err := compile(ctx, rt, bin); err != nil {
				t.Fatalf("mutant %d: wazero refuses its copy by %s: %v", k, name, err)
			}
		}
		if !run {
			c.compared++
			continue
		}
		if want, got := runExports(ctx, rt, b), runExports(ctx, rt, plain); got != want {
			t.Fatalf("mutant %d:\ninstrumented %s\noriginal     %s", k, got, want)
		}
		c.compared++
	}
	t.Logf("%d mutants, %d parsed: %d accepted by wazero, and so were their copies (run: %v); %d refused by wazero (%d by panicking), then by Instrument (%d) or by wazero again (%d)",
		n, c.parsed, c.compared, run, c.refused, c.panics, c.byInstrument, c.byWazero)
	return c
}

// runExports instantiates bin, calls each of its exports without parameters (but the added
// ones) in name order and reads its exported globals k and counter; it returns all of it,
// or why instantiation failed.
func runExports(ctx context.Context, rt wazero.Runtime, bin []byte) string {
	code, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return "compile: " + firstLine(err)
	}
	defer code.Close(ctx)
	mod, err := rt.InstantiateModule(ctx, code, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		return "instantiate: " + firstLine(err)
	}
	defer mod.Close(ctx)
	defs := code.ExportedFunctions()
	var out []string
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		if len(defs[name].ParamTypes()) > 0 || strings.HasPrefix(name, ReservedPrefix) {
			continue
		}
		r, err := mod.ExportedFunction(name).Call(ctx)
		out = append(out, fmt.Sprintf("%s: %v %s", name, r, firstLine(err)))
	}
	for _, name := range []string{"counter", "k"} {
		if g := mod.ExportedGlobal(name); g != nil {
			out = append(out, fmt.Sprintf("%s = %d", name, g.Get()))
		}
	}
	return strings.Join(out, "; ")
}

// instrumentBoth parses src and returns it instrumented both ways (Instrument and
// InstrumentSnapshot), failing the test if either refuses it.
func instrumentBoth(t *testing.T, src []byte) (plain, snapBin []byte, snap Snapshot) {
	t.Helper()
	m, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err = Instrument(m, 0); err != nil {
		t.Fatalf("Instrument: %v", err)
	}
	if snapBin, snap, err = InstrumentSnapshot(m, 0); err != nil {
		t.Fatalf("InstrumentSnapshot: %v", err)
	}
	return plain, snapBin, snap
}
