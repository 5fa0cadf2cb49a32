package wasmbin

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// Indices in idxModule: its three functions are followed, in the instrumented copy, by the
// memory.grow helper and the safe point; its two types ()->i32 and ()->() by (i32)->i32, the
// memory.grow helper's.
const (
	idxSafePoint = 4 // the safe point's function index in the copy
	idxAddedType = 2 // (i32)->i32 in the copy
)

// idxModule is the module of the index tests: types ()->i32 and ()->(), function 0 ("f",
// ()->i32) running code, functions 1 and 2 (()->()) running code1 and nothing, one memory.
// Each section of extra replaces the one of its id, or is added in its place.
func idxModule(code, code1 []byte, extra ...[]byte) []byte {
	secs := map[byte][]byte{
		secType:     sect(secType, funcType(nil, []byte{0x7f}), funcType(nil, nil)),
		secFunction: sect(secFunction, []byte{0}, []byte{1}, []byte{1}),
		secMemory:   oneMemory,
		secExport:   sect(secExport, export("f", KindFunc, 0)),
		secCode:     sect(secCode, body(code...), body(code1...), body()),
	}
	for _, s := range extra {
		secs[s[0]] = s
	}
	return wasmModule(sorted(slices.Collect(maps.Values(secs)))...)
}

func call(i uint32) []byte    { return appendU32([]byte{0x10}, i) }
func refFunc(i uint32) []byte { return appendU32([]byte{0xd2}, i) }

// callIndirect calls the function at slot 0 of table 0 with type ti.
func callIndirect(ti uint32) []byte {
	return cat(i32Const(0), appendU32([]byte{0x11}, ti), []byte{0x00})
}

// startSection is a start section naming function i.
func startSection(i uint32) []byte {
	idx := appendU32(nil, i)
	return append(appendU32([]byte{secStart}, uint32(len(idx))), idx...)
}

// importFunc is an import section entry for function env.name of type ti; importTag the
// same for a tag.
func importFunc(name string, ti uint32) []byte {
	return cat(appendName(nil, "env"), appendName(nil, name), []byte{KindFunc}, appendU32(nil, ti))
}

func importTag(name string, ti uint32) []byte {
	return cat(appendName(nil, "env"), appendName(nil, name), []byte{KindTag, 0x00}, appendU32(nil, ti))
}

// idxCase is a module that names a function or a type it does not have, at one place, and its
// counterpart whose index is in range.
type idxCase struct {
	name      string
	bad, good []byte
	want      string // in Instrument's error
	proposals bool   // needs tail calls, exceptions or typed function references
}

// idxCases has one case for every place a module can name a function or a type. A bad module
// names, in its copy, the safe point (function idxSafePoint, which refills the fuel) or the
// type of the memory.grow helper (type idxAddedType), or, where a tag needs a type without
// results, the safe point's ()->().
func idxCases() []idxCase {
	i32 := []byte{0x7f}
	table := sect(secTable, []byte{0x70, 0x00, 0x01})
	declare := sect(secExport, export("f", KindFunc, 0), export("h", KindFunc, 2)) // for ref.func 2
	// slot0 is an element segment that puts function i at slot 0.
	slot0 := func(i uint32) []byte {
		return sect(secElement, cat([]byte{0x00}, i32Const(0), []byte{0x0b, 0x01}, appendU32(nil, i)))
	}
	// For the tags: without a type that has no results, Instrument adds ()->() as type 2.
	tagTypes := func(good bool) []byte {
		if good {
			return sect(secType, funcType(nil, i32), funcType(i32, i32), funcType(i32, nil))
		}
		return sect(secType, funcType(nil, i32), funcType(i32, i32))
	}
	tagModule := func(good bool, extra ...[]byte) []byte {
		return idxModule(nil, nil, append([][]byte{tagTypes(good),
			sect(secFunction, []byte{0}), sect(secCode, body(i32Const(7)...))}, extra...)...)
	}
	fn := func(name string, mk func(i uint32) []byte, proposals bool) idxCase {
		return idxCase{name: name, bad: mk(idxSafePoint), good: mk(2), proposals: proposals,
			want: "function index 4 out of range (3 functions)"}
	}
	const typeWant = "type index 2 out of range (2 types)"
	ty := func(name string, bad, good []byte, proposals bool) idxCase {
		return idxCase{name: name, bad: bad, good: good, want: typeWant, proposals: proposals}
	}
	ret7 := i32Const(7)
	return []idxCase{
		fn("call", func(i uint32) []byte { return idxModule(cat(call(i), ret7), nil) }, false),
		fn("return_call", func(i uint32) []byte {
			return idxModule(cat(call(1), ret7), appendU32([]byte{0x12}, i))
		}, true),
		fn("ref.func", func(i uint32) []byte {
			return idxModule(cat(refFunc(i), []byte{0xd1}, ret7, []byte{0x6a}), nil, declare)
		}, false),
		fn("export", func(i uint32) []byte {
			return idxModule(ret7, nil, sect(secExport, export("f", KindFunc, 0), export("h", KindFunc, i)))
		}, false),
		fn("element segment", func(i uint32) []byte {
			return idxModule(cat(callIndirect(1), ret7), nil, table, slot0(i))
		}, false),
		fn("passive element segment", func(i uint32) []byte {
			return idxModule(ret7, nil, table, sect(secElement, cat([]byte{0x01, 0x00, 0x01}, appendU32(nil, i))))
		}, false),
		fn("element expression", func(i uint32) []byte {
			return idxModule(cat(callIndirect(1), ret7), nil, table,
				sect(secElement, cat([]byte{0x04}, i32Const(0), []byte{0x0b, 0x01}, refFunc(i), []byte{0x0b})))
		}, false),
		fn("start", func(i uint32) []byte { return idxModule(ret7, nil, startSection(i)) }, false),
		fn("global initialiser", func(i uint32) []byte {
			return idxModule(cat(globalGet(0), []byte{0xd1}, ret7, []byte{0x6a}), nil,
				sect(secGlobal, global(0x70, false, refFunc(i)...)))
		}, false),

		// Function 1 of type (i32)->i32, or ()->().
		ty("function section",
			idxModule(ret7, []byte{0x20, 0x00}, sect(secFunction, []byte{0}, []byte{idxAddedType}, []byte{1})),
			idxModule(ret7, nil, sect(secFunction, []byte{0}, []byte{1}, []byte{1})), false),
		// env.h of type (i32)->i32, or ()->i32; it is function 0, "f" function 1.
		ty("import",
			idxModule(ret7, nil, sect(secImport, importFunc("h", idxAddedType)), sect(secExport, export("f", KindFunc, 1))),
			idxModule(ret7, nil, sect(secImport, importFunc("h", 0)), sect(secExport, export("f", KindFunc, 1))), false),
		ty("call_indirect",
			idxModule(cat(i32Const(5), callIndirect(idxAddedType)), nil, table, slot0(2)),
			idxModule(cat(callIndirect(1), ret7), nil, table, slot0(2)), false),
		ty("return_call_indirect",
			idxModule(cat(i32Const(5), i32Const(0), []byte{0x13, idxAddedType, 0x00}), nil, table, slot0(2)),
			idxModule(cat(call(1), ret7), cat(i32Const(0), []byte{0x13, 1, 0x00}), table, slot0(2)), true),
		ty("block type",
			idxModule(cat(i32Const(5), []byte{0x02, idxAddedType, 0x0b}), nil),
			idxModule(cat([]byte{0x02, 0}, i32Const(5), []byte{0x0b}), nil), false),
		ty("loop type",
			idxModule(cat(i32Const(5), []byte{0x03, idxAddedType, 0x0b}), nil),
			idxModule(cat([]byte{0x03, 0}, i32Const(5), []byte{0x0b}), nil), false),
		ty("if type",
			idxModule(cat(i32Const(5), i32Const(1), []byte{0x04, idxAddedType, 0x0b}), nil),
			idxModule(cat(i32Const(1), []byte{0x04, 0}, i32Const(5), []byte{0x05}, i32Const(6), []byte{0x0b}), nil), false),
		ty("try_table type",
			idxModule(cat(i32Const(5), []byte{0x1f, idxAddedType, 0x00, 0x0b}), nil),
			idxModule(cat([]byte{0x1f, 0, 0x00}, i32Const(5), []byte{0x0b}), nil), true),
		// call_ref and return_call_ref after unreachable, whose operand can be of any type.
		ty("call_ref",
			idxModule([]byte{0x00, 0x14, idxAddedType}, nil),
			idxModule(cat(refFunc(2), []byte{0x14, 1}, ret7), nil, declare), true),
		ty("return_call_ref",
			idxModule([]byte{0x00, 0x15, idxAddedType}, nil),
			idxModule(cat(call(1), ret7), cat(refFunc(2), []byte{0x15, 1}), declare), true),
		ty("ref.null",
			idxModule(cat([]byte{0xd0, idxAddedType, 0x1a}, ret7), nil),
			idxModule(cat([]byte{0xd0, 0, 0x1a}, ret7), nil), true),
		// A tag of type 2: ()->() in the bad module's copy, (i32)->() in the good module.
		ty("tag", tagModule(false, sect(secTag, []byte{0x00, 2})), tagModule(true, sect(secTag, []byte{0x00, 2})), true),
		ty("tag import", tagModule(false, sect(secImport, importTag("t", 2))), tagModule(true, sect(secImport, importTag("t", 2))), true),
		// Data segments: InstrumentSnapshot appends its merged segments and writes a data
		// count section (see dataModule).
		{name: "memory.init", bad: dataModule(memoryInit(1), 1), good: dataModule(memoryInit(0), 1),
			want: "data segment index 1 out of range (1 segments)"},
		{name: "data.drop", bad: dataModule(dataDrop(1), 1), good: dataModule(dataDrop(0), 1),
			want: "data segment index 1 out of range (1 segments)"},
		{name: "no data count", bad: dataModule(memoryInit(0), -1), good: dataModule(memoryInit(0), 1),
			want: "without a data count section"},
		{name: "data count", bad: dataModule(nil, 2), good: dataModule(nil, 1),
			want: "the data count section says 2 segments, the data section has 1"},
	}
}

// idxRuntimes returns a runtime with the sandbox's features and one with the proposals the
// cases need, each with the module env of instantiateIdxEnv.
func idxRuntimes(t *testing.T) (standard, proposals wazero.Runtime) {
	ctx := context.Background()
	standard = wazero.NewRuntime(ctx)
	proposals = wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(proposalFeatures))
	t.Cleanup(func() { standard.Close(ctx); proposals.Close(ctx) })
	instantiateIdxEnv(t, standard, false)
	instantiateIdxEnv(t, proposals, true)
	return standard, proposals
}

// proposalFeatures are the sandbox's features and the proposals of the cases.
const proposalFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesTailCall |
	experimental.CoreFeaturesExceptionHandling | experimental.CoreFeaturesTypedFunctionReferences

// instantiateIdxEnv instantiates, in rt, the module env which exports a function h ()->i32
// (returning 3), the immutable i32 global g (5) and, with tags, a tag t (i32).
func instantiateIdxEnv(t *testing.T, rt wazero.Runtime, tags bool) {
	t.Helper()
	exports := [][]byte{export("h", KindFunc, 0), export("g", KindGlobal, 0)}
	secs := [][]byte{sect(secType, funcType(nil, []byte{0x7f}), funcType([]byte{0x7f}, nil)), sect(secFunction, []byte{0}),
		sect(secGlobal, global(0x7f, false, i32Const(5)...)), sect(secCode, body(i32Const(3)...))}
	if tags {
		secs = append(secs, sect(secTag, []byte{0x00, 1}))
		exports = append(exports, export("t", KindTag, 0))
	}
	env := wasmModule(sorted(append(secs, sect(secExport, exports...)))...)
	if _, err := rt.InstantiateWithConfig(context.Background(), env, wazero.NewModuleConfig().WithName("env")); err != nil {
		t.Fatal(err)
	}
}

// TestIndexDifferential mutates the modules of idxCases that name only what they have, at
// random, often into a small index or an instruction that takes one, with the sandbox's
// features and with the proposals on, and requires of every mutant what differential says,
// without running them (a tail call can loop where the interpreter never looks at a context):
// in particular, none that wazero refuses is accepted after instrumentation.
func TestIndexDifferential(t *testing.T) {
	var bases [][]byte
	for _, c := range idxCases() {
		bases = append(bases, c.good)
	}
	for i, features := range []api.CoreFeatures{api.CoreFeaturesV2, proposalFeatures} {
		t.Run(features.String(), func(t *testing.T) {
			ctx := context.Background()
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
				WithCoreFeatures(features|experimental.CoreFeaturesExtendedConst))
			defer rt.Close(ctx)
			instantiateIdxEnv(t, rt, features == proposalFeatures)
			c := differential(t, rt, rand.New(rand.NewPCG(13, uint64(i))), bases, 60_000,
				[]byte{0, 1, 2, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x13, 0x14, 0xd2, 0xd0, 0x02, 0x03, 0x04, 0x1f}, false)
			if c.compared < 1000 || c.refused < 1000 {
				t.Fatalf("only %d mutants accepted, %d refused", c.compared, c.refused)
			}
		})
	}
}

// TestInstrumentRefusesIndicesOutOfRange: a reference to a function or a type that the module
// does not have is refused wherever the module makes it, since after the additions it would
// name one of the sandbox's helpers or their types; wazero refuses the module as it is. The
// counterpart in range is instrumented and runs as it does without.
func TestInstrumentRefusesIndicesOutOfRange(t *testing.T) {
	ctx := context.Background()
	standard, proposals := idxRuntimes(t)
	for _, c := range idxCases() {
		t.Run(c.name, func(t *testing.T) {
			rt := standard
			if c.proposals {
				rt = proposals
			}
			if _, err := rt.CompileModule(ctx, c.bad); err == nil {
				t.Fatal("wazero accepts the module")
			}
			m, err := Parse(c.bad)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Instrument(m, 0); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Instrument: %v, want ErrMalformed and %q", err, c.want)
			}
			if _, _, err := InstrumentSnapshot(m, 0); !errors.Is(err, ErrMalformed) {
				t.Errorf("InstrumentSnapshot: %v, want ErrMalformed", err)
			}

			if _, err := rt.CompileModule(ctx, c.good); err != nil {
				t.Fatalf("in range: wazero refuses the module: %v", err)
			}
			plain, snapBin, _ := instrumentBoth(t, c.good) // in range
			if _, err := rt.CompileModule(ctx, snapBin); err != nil {
				t.Fatalf("in range: wazero refuses the copy for snapshots: %v", err)
			}
			want := runExports(ctx, rt, c.good)
			if !strings.HasPrefix(want, "f: [") {
				t.Fatalf("in range: the original does not run: %s", want)
			}
			if got := runExports(ctx, rt, plain); got != want {
				t.Fatalf("in range: instrumented %s\noriginal %s", got, want)
			}
		})
	}
}

// TestInstrumentRefusesStartWithValues: a start function must take and return nothing, which
// wazero no longer checks once InstrumentSnapshot has made it an export (found by
// TestIndexDifferential).
func TestInstrumentRefusesStartWithValues(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	bin := idxModule(i32Const(7), nil, startSection(0)) // function 0 returns an i32
	if _, err := rt.CompileModule(ctx, bin); err == nil {
		t.Fatal("wazero accepts the module")
	}
	m, err := Parse(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := InstrumentSnapshot(m, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("InstrumentSnapshot: %v, want ErrMalformed", err)
	}
	if _, err := Instrument(m, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("Instrument: %v, want ErrMalformed", err)
	}
}
