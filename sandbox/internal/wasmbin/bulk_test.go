package wasmbin

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

const bulkPath = "testdata/bulk.wasm"

// pair is the bulk module twice, as it is and instrumented, in one wazero runtime.
type pair struct {
	plain, inst api.Module
}

func newPair(t *testing.T, rt wazero.Runtime, memChunk, tabChunk int32) pair {
	t.Helper()
	ctx := context.Background()
	orig := readSeed(t, bulkPath)
	m, err := Parse(orig)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := instrument(m, 0, memChunk, tabChunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	var p pair
	for _, b := range []struct {
		bin []byte
		dst *api.Module
	}{{orig, &p.plain}, {bin, &p.inst}} {
		code, err := rt.CompileModule(ctx, b.bin)
		if err != nil {
			t.Fatal(err)
		}
		mod, err := rt.InstantiateModule(ctx, code, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		*b.dst = mod
	}
	return p
}

// firstLine is a wazero error without its stack trace (the instrumented module's has one
// more frame, the helper's).
func firstLine(err error) string {
	if err == nil {
		return "ok"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// call runs export name with args on both modules and fails unless the results, the
// errors and then the memories and tables are the same.
func (p pair) call(t *testing.T, name string, args ...uint64) {
	t.Helper()
	ctx := context.Background()
	r1, e1 := p.plain.ExportedFunction(name).Call(ctx, args...)
	r2, e2 := p.inst.ExportedFunction(name).Call(ctx, args...)
	what := fmt.Sprintf("%s%v", name, args)
	if firstLine(e1) != firstLine(e2) {
		t.Fatalf("%s: plain %q, instrumented %q", what, firstLine(e1), firstLine(e2))
	}
	if fmt.Sprint(r1) != fmt.Sprint(r2) {
		t.Fatalf("%s: plain returned %v, instrumented %v", what, r1, r2)
	}
	m1, m2 := p.plain.Memory(), p.inst.Memory()
	if m1.Size() != m2.Size() {
		t.Fatalf("%s: memory sizes %d and %d", what, m1.Size(), m2.Size())
	}
	b1, _ := m1.Read(0, m1.Size())
	b2, _ := m2.Read(0, m2.Size())
	if !bytes.Equal(b1, b2) {
		i := 0
		for b1[i] == b2[i] {
			i++
		}
		t.Fatalf("%s: memories differ from byte %d", what, i)
	}
	s1, _ := p.plain.ExportedFunction("tsize").Call(ctx)
	s2, _ := p.inst.ExportedFunction("tsize").Call(ctx)
	if s1[0] != s2[0] {
		t.Fatalf("%s: table sizes %d and %d", what, s1[0], s2[0])
	}
	for i := range s1[0] {
		g1, _ := p.plain.ExportedFunction("tget").Call(ctx, i)
		g2, _ := p.inst.ExportedFunction("tget").Call(ctx, i)
		if g1[0] != g2[0] {
			t.Fatalf("%s: table slot %d holds %d and %d", what, i, int32(g1[0]), int32(g2[0]))
		}
	}
}

// TestBulkDifferential runs random bulk instructions, with lengths and offsets around the
// chunk size, the memory's and table's ends and the segments' ends, overlapping copies in
// both directions, dropped segments and growths, on the module as it is and as Instrument
// rewrites it (with tiny chunks, so that every range is cut into many), and requires the
// same results, the same traps (and nothing written by a trapping instruction), and the
// same memory and table contents after every instruction.
func TestBulkDifferential(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	const memChunk, tabChunk = 64, 4
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			p := newPair(t, rt, memChunk, tabChunk)
			rng := rand.New(rand.NewPCG(seed, 42))
			memEnd := func() uint64 { return uint64(p.plain.Memory().Size()) }
			tabEnd := func() uint64 {
				s, _ := p.plain.ExportedFunction("tsize").Call(ctx)
				return s[0]
			}
			// pick returns an offset or length near one of the interesting points.
			pick := func(end uint64, chunk uint64) uint64 {
				bases := []uint64{0, chunk, 2 * chunk, end / 2, end, 1<<32 - 1}
				b := bases[rng.IntN(len(bases))]
				up, down := uint64(rng.IntN(int(3*chunk))), uint64(rng.IntN(int(3*chunk)))
				return (b + up - down) & (1<<32 - 1)
			}
			length := func(end uint64, chunk uint64) uint64 {
				switch rng.IntN(4) {
				case 0:
					return uint64(rng.IntN(int(chunk) + 2))
				case 1:
					return chunk*uint64(1+rng.IntN(5)) + uint64(rng.IntN(3)) - 1
				case 2:
					return uint64(rng.IntN(int(end) + 1))
				}
				return pick(end, chunk)
			}
			for range 300 {
				me, te := memEnd(), tabEnd()
				switch rng.IntN(12) {
				case 0:
					p.call(t, "fill", pick(me, memChunk), uint64(rng.IntN(256)), length(me, memChunk))
				case 1, 2:
					d := pick(me, memChunk)
					s := d + uint64(rng.IntN(3*memChunk)) - uint64(rng.IntN(3*memChunk)) // often overlapping
					p.call(t, "copy", d, s&(1<<32-1), length(me, memChunk))
				case 3:
					p.call(t, "init", pick(me, memChunk), uint64(rng.IntN(140)), length(140, memChunk))
				case 4:
					if rng.IntN(8) == 0 {
						p.call(t, "data_drop")
					}
				case 5:
					if me < 8<<16 {
						p.call(t, "grow", uint64(rng.IntN(3)))
					}
				case 6:
					p.call(t, "tfill", pick(te, tabChunk), uint64(rng.IntN(6)), length(te, tabChunk))
				case 7, 8:
					d := pick(te, tabChunk)
					s := d + uint64(rng.IntN(3*tabChunk)) - uint64(rng.IntN(3*tabChunk))
					p.call(t, "tcopy", d, s&(1<<32-1), length(te, tabChunk))
				case 9:
					p.call(t, "tcopy_src", pick(te, tabChunk), uint64(rng.IntN(8)), uint64(rng.IntN(8)))
				case 10:
					p.call(t, "tinit", pick(te, tabChunk), uint64(rng.IntN(22)), length(22, tabChunk))
					if rng.IntN(10) == 0 {
						p.call(t, "elem_drop")
					}
				case 11:
					if te < 96 {
						p.call(t, "tgrow", uint64(rng.IntN(6)), uint64(rng.IntN(40)))
					}
				}
			}
		})
	}
}

// TestBulkDifferentialRealChunks does long fills and overlapping copies (several MiB) with
// the real chunk sizes.
func TestBulkDifferentialRealChunks(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	p := newPair(t, rt, ChunkBytes, ChunkElements)
	p.call(t, "grow", 80) // 82 pages: 5.1 MiB
	const mib = 1 << 20
	p.call(t, "fill", 3, 7, 5*mib-3)
	p.call(t, "fill", 100, 9, 2*mib+17)
	p.call(t, "copy", 12345, 0, 3*mib+1)                      // overlapping, destination above: from the end
	p.call(t, "copy", 1, 2*mib+5, 3*mib-9)                    // overlapping, destination below
	p.call(t, "copy", 0, 1, 82<<16)                           // out of bounds by one: traps, writes nothing
	p.call(t, "fill", 82<<16-ChunkBytes*3, 1, ChunkBytes*3+1) // the same for a fill
	p.call(t, "copy", 82<<16-4*mib, 0, 4*mib)                 // up to the very end
	p.call(t, "tgrow", 1, 3*ChunkElements+5)                  // table.grow in chunks
	p.call(t, "tfill", 7, 2, 3*ChunkElements+1)
	p.call(t, "tcopy", 9, 0, 3*ChunkElements)
	p.call(t, "tcopy", 0, 11, 3*ChunkElements)
}

// TestTableGrowLimit checks the table cap: the module's tables together never hold more than
// MaxTableElements; growing past its share fails as at a declared maximum, all or nothing.
// (bulk.wat's $t starts at 40 elements with no maximum, $src is 6 with a maximum of 6: each
// may grow by half of what the minimums leave, see clampTables.)
func TestTableGrowLimit(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	p := newPair(t, rt, ChunkBytes, ChunkElements)
	grow := p.inst.ExportedFunction("tgrow")
	if r, err := grow.Call(ctx, 0, MaxTableElements); err != nil || int32(r[0]) != -1 {
		t.Fatalf("grow past the cap = %v, %v; want -1", r, err)
	}
	share := uint64(MaxTableElements-46) / 2
	if r, err := grow.Call(ctx, 0, share); err != nil || r[0] != 40 {
		t.Fatalf("grow to the cap = %v, %v; want 40", r, err)
	}
	if r, err := grow.Call(ctx, 0, 1); err != nil || int32(r[0]) != -1 {
		t.Fatalf("grow at the cap = %v, %v; want -1", r, err)
	}
	if size := 40 + share + 6; size > MaxTableElements {
		t.Fatalf("the tables hold %d elements, over MaxTableElements", size)
	}
}
