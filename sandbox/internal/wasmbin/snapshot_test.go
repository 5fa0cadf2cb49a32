package wasmbin

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// TestInstrumentSnapshot runs snap.wasm rewritten: instantiation writes nothing, the added
// functions write the data and run the start function, the merged segments give the same
// bytes as the original ones, and the passive segment keeps its index.
func TestInstrumentSnapshot(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	m, err := Parse(readSeed(t, "testdata/snap.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	out, snap, err := InstrumentSnapshot(m, 10)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Why != "" || !snap.InitData || !snap.Start || len(snap.Globals) != 2 || snap.Globals[0] != 0 || snap.Globals[1] != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	re, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if re.HasStart {
		t.Fatal("the start section is still there")
	}
	// 6 original segments keep their indices (the code names one); 3 merged ones follow.
	if n := dataCount(t, re); n != 9 {
		t.Fatalf("%d data segments, want 9", n)
	}
	wm, err := rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	mem := wm.Memory()
	if b, _ := mem.Read(0, 6000); !bytes.Equal(b, make([]byte, 6000)) {
		t.Fatal("instantiation wrote data")
	}
	if g := wm.ExportedFunction("g"); callI(t, g) != 7 {
		t.Fatal("start ran at instantiation")
	}
	for _, f := range []string{ExportInitData, ExportStart, "copy"} {
		if _, err := wm.ExportedFunction(f).Call(ctx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	want := make([]byte, 6000)
	copy(want[16:], "aQcdef")
	copy(want[100:], "xyz")
	copy(want[200:], "passive")
	copy(want[5000:], "far")
	if b, _ := mem.Read(0, 6000); !bytes.Equal(b, want) {
		t.Fatal("the data differs from the original segments'")
	}
	if g := callI(t, wm.ExportedFunction("g")); g != 8 {
		t.Fatalf("g = %d after start, want 8", g)
	}
	g := wm.ExportedGlobal(GlobalExport(0)).(api.MutableGlobal)
	g.Set(41)
	if v := callI(t, wm.ExportedFunction("g")); v != 41 {
		t.Fatalf("g = %d after a host write, want 41", v)
	}
	if wm.ExportedGlobal(GlobalExport(2)) != nil {
		t.Fatal("an immutable global is exported")
	}
}

// TestInstrumentSnapshotRefuses: a module whose code changes a table is not snapshottable,
// and still runs.
func TestInstrumentSnapshotRefuses(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	m, err := Parse(readSeed(t, "testdata/snaptable.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	out, snap, err := InstrumentSnapshot(m, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(snap.Why, "table.set") {
		t.Fatalf("why %q", snap.Why)
	}
	wm, err := rt.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wm.ExportedFunction("set").Call(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestInstrumentSnapshotSeeds rewrites every seed and checks that wazero compiles it and that
// the merged segments, applied in order, give the memory the original ones give.
func TestInstrumentSnapshotSeeds(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, p := range append(seeds, "../../../plugins/conformance/go/conformance.wasm") {
		t.Run(filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p), func(t *testing.T) {
			if strings.Contains(p, "/go/") && testing.Short() {
				t.Skip("large")
			}
			m, err := Parse(readSeed(t, p))
			if err != nil {
				t.Fatal(err)
			}
			out, snap, err := InstrumentSnapshot(m, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !snap.InitData {
				t.Fatalf("no init_data: %q", snap.Why)
			}
			code, err := rt.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("does not compile: %v", err)
			}
			defer code.Close(ctx)
			re, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := applyData(t, re), applyData(t, m); !bytes.Equal(got, want) {
				t.Fatalf("merged data differs: %d bytes vs %d", len(got), len(want))
			}
			t.Logf("%d data segments → %d", dataCount(t, m), dataCount(t, re))
		})
	}
}

func callI(t *testing.T, f api.Function) uint64 {
	t.Helper()
	r, err := f.Call(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r[0]
}

func dataSection(m *Module) []byte {
	for _, s := range m.sections {
		if s.id == secData {
			return s.payload
		}
	}
	return nil
}

func dataCount(t *testing.T, m *Module) uint32 {
	p := dataSection(m)
	if p == nil {
		return 0
	}
	r := reader{b: p}
	return r.u32()
}

// applyData writes a module's data into a memory image: an original module's active
// segments at their offsets, in order; a rewritten module's by decoding its init_data body.
func applyData(t *testing.T, m *Module) []byte {
	t.Helper()
	var img []byte
	write := func(off uint32, b []byte) {
		if end := int(off) + len(b); end > len(img) {
			img = append(img, make([]byte, end-len(img))...)
		}
		copy(img[off:], b)
	}
	var segs [][]byte
	r := reader{b: dataSection(m)}
	n := uint32(0)
	if len(r.b) > 0 {
		n = r.u32()
	}
	var init []byte
	for _, ex := range m.Exports {
		if ex.Name == ExportInitData {
			init = m.bodies[ex.Index-m.NumImportedFuncs]
		}
	}
	for i := uint32(0); i < n; i++ {
		flags := r.u32()
		var off uint32
		if flags != 1 {
			r.byte()
			off = uint32(r.s32())
			r.byte()
		}
		b := r.bytes(r.u32())
		segs = append(segs, b)
		if flags != 1 {
			if init != nil {
				t.Fatal("an active segment in a rewritten module")
			}
			write(off, b)
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if init == nil {
		return bytes.TrimRight(img, "\x00")
	}
	br := reader{b: init[1 : len(init)-1]}
	for !br.done() {
		br.byte() // i32.const
		off := uint32(br.s32())
		br.byte()
		br.s32()
		br.byte()
		ln := uint32(br.s32())
		br.byte() // 0xfc
		br.u32()  // memory.init
		idx := br.u32()
		br.byte() // memory 0
		br.byte() // 0xfc
		br.u32()  // data.drop
		br.u32()  // idx
		write(off, segs[idx][:ln])
	}
	if br.err != nil {
		t.Fatal(br.err)
	}
	return bytes.TrimRight(img, "\x00")
}
