package wasmbin

import (
	"context"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// safePointCounter counts the calls of the safe point (ExportSafePoint).
type safePointCounter struct{ n int }

func (c *safePointCounter) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	for _, name := range def.ExportNames() {
		if name == ExportSafePoint {
			return c
		}
	}
	return nil
}

func (c *safePointCounter) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
	c.n++
}
func (c *safePointCounter) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}
func (c *safePointCounter) Abort(context.Context, api.Module, api.FunctionDefinition, error)    {}

// fuelRun is what one export did: its result and how many safe points it passed.
type fuelRun struct {
	result     uint64
	safePoints int
}

// runFuel instantiates bin and calls each export of fuelCalls once.
func runFuel(t testing.TB, rt wazero.Runtime, bin []byte) map[string]fuelRun {
	ctx := context.Background()
	c := &safePointCounter{}
	code, err := rt.CompileModule(experimental.WithFunctionListenerFactory(ctx, c), bin)
	if err != nil {
		t.Fatal(err)
	}
	defer code.Close(ctx)
	runs := map[string]fuelRun{}
	for _, fc := range fuelCalls {
		mod, err := rt.InstantiateModule(ctx, code, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		c.n = 0
		res, err := mod.ExportedFunction(fc.name).Call(ctx, fc.arg)
		if err != nil {
			t.Fatalf("%s(%d): %v", fc.name, fc.arg, err)
		}
		runs[fc.name] = fuelRun{res[0], c.n}
		mod.Close(ctx)
	}
	return runs
}

// fuelCalls are the exports of testdata/fuel.wasm and their counts: each runs millions of
// units, so many times Fuel.
//
// units is a lower bound of the units one step of the count costs: the instructions of the
// loop body (or, for recurse, of one call) as the Wasm text reads, fewer than Instrument
// counts.
var fuelCalls = []struct {
	name  string
	arg   uint64
	units int
}{
	{"spin", 3_000_000, 10},
	{"exit_return", 3_000_000, 12},
	{"exit_br", 3_000_000, 10},
	{"exit_br_if", 3_000_000, 12},
	{"exit_br_table", 3_000_000, 12},
	{"outer", 20_000, 400},
	{"nested", 100_000, 60},
	{"recurse", 60_000, 15},
}

// TestFuelInEveryShape runs every export of testdata/fuel.wasm as it is and instrumented:
// the results must be the original's, and each must pass safe points, at least one for every
// Fuel units it ran (counted from its loop's weight and trip count, a lower bound): work that
// leaves a loop by return, br, br_if or br_table to the function's label, a loop that calls
// every kind of function, nested loops with memory.grow and memory.fill, and recursion.
func TestFuelInEveryShape(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	src := readSeed(t, "testdata/fuel.wasm")
	plain := runFuel(t, rt, src)
	m, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := Instrument(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := runFuel(t, rt, bin)
	for _, fc := range fuelCalls {
		g := got[fc.name]
		if g.result != plain[fc.name].result {
			t.Errorf("%s: result %d, want %d", fc.name, g.result, plain[fc.name].result)
		}
		if min := int(fc.arg) * fc.units / Fuel; g.safePoints < min || g.safePoints < 1 {
			t.Errorf("%s: %d safe points, want at least %d", fc.name, g.safePoints, min)
		}
		t.Logf("%s: %d safe points", fc.name, g.safePoints)
	}
}

// BenchmarkFuel runs spin (a loop of a few instructions), outer (loops that call) and
// recurse (calls without loops) as they are and instrumented: the price of the checks.
func BenchmarkFuel(b *testing.B) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	src := readSeed(b, "testdata/fuel.wasm")
	m, err := Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	bin, err := Instrument(m, 0)
	if err != nil {
		b.Fatal(err)
	}
	bins := map[string][]byte{"plain": src, "instrumented": bin}
	for _, fn := range []struct {
		name string
		arg  uint64
	}{{"spin", 1000}, {"outer", 10}, {"recurse", 100}} {
		for _, mode := range []string{"plain", "instrumented"} {
			b.Run(fmt.Sprintf("%s/%s", fn.name, mode), func(b *testing.B) {
				mod, err := rt.Instantiate(ctx, bins[mode])
				if err != nil {
					b.Fatal(err)
				}
				defer mod.Close(ctx)
				f := mod.ExportedFunction(fn.name)
				stack := make([]uint64, 1)
				for b.Loop() {
					stack[0] = fn.arg
					if err := f.CallWithStack(ctx, stack); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
