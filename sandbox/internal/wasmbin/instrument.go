package wasmbin

import (
	"errors"
	"fmt"
	"strings"
)

// Names of the exports that Instrument adds. The colon keeps them apart from any name a
// guest toolchain produces; the sandbox refuses modules that already export one.
const (
	ExportInterrupt  = "wasmvisor:interrupt"
	ExportGrowFailed = "wasmvisor:grow_failed"
	// ExportSafePoint is the function a fuel check calls when the fuel runs out, exported so
	// that a host that cannot reach the instance's globals from outside (package
	// sandbox/extism, behind the Extism SDK) can watch it with a wazero function listener.
	ExportSafePoint = "wasmvisor:safe_point"
	// ReservedPrefix starts every name Instrument adds.
	ReservedPrefix = "wasmvisor:"
)

// ErrMinAboveLimit is returned by Instrument when the module's memory needs more pages at
// start than the limit allows.
var ErrMinAboveLimit = errors.New("memory minimum above the limit")

// Costs, in fuel units. A unit is about one Wasm instruction; see Instrument.
const (
	// Fuel is how many units the guest spends between two safe points that pass through Go.
	Fuel = 1 << 18
	// ChunkBytes is the most a bulk memory instruction (memory.fill, memory.copy,
	// memory.init) does between two fuel checks; it costs ChunkBytes>>4 units.
	ChunkBytes = 64 << 10
	// ChunkElements is the same for tables (table.fill, table.copy, table.init, table.grow):
	// 8 bytes a reference, so a chunk is also 64 KiB of work, at ChunkElements>>1 units.
	ChunkElements = 8 << 10
	// PageCost is what memory.grow charges per page, capped at Fuel.
	PageCost = ChunkBytes >> 4
	// LeafMax is the largest loop-free weight of a function that gets no check at its entry
	// when it makes no call: its callers pay for it at the call site.
	LeafMax = 256

	helperWeight = 32 // a call to an added helper, besides what it charges
	memShift     = 4  // memory bytes per unit: 16
	tableShift   = 1  // table elements per unit: 2
	chunkCost    = ChunkBytes >> memShift
	maxWeight    = 1 << 30 // a region's weight is clamped here (fuel is an i32)
	indirectCost = 1       // plus the largest leaf's weight
)

// Instrument returns a copy of the module with:
//
//   - three mutable globals: ExportInterrupt (i32, exported, 0 while the guest may run; the
//     host writes 1 to stop it), ExportGrowFailed (i32, exported, set to 1 when memory.grow
//     fails) and a fuel counter (i32, not exported);
//   - fuel checks, each charging in advance the work of the region it heads: at the head of
//     every loop (the loop's body, less its inner loops) and at the entry of every function
//     that makes a call or whose loop-free body weighs more than LeafMax (that body, less its
//     loops). A region weighs one unit per instruction, plus, for a call, the weight of the
//     callee when it is a leaf without an entry check (the largest such leaf for an
//     indirect call). When the fuel runs out, a call to an added function refills it,
//     passes through the Go runtime (a memory.grow of zero pages, which wazero serves in
//     Go, where the goroutine can be preempted, so a spinning guest cannot stall a garbage
//     collection), and traps with unreachable if interrupt is not zero (that function is
//     exported as ExportSafePoint). Every backward jump
//     lands on a loop head and every call on a checked entry or a prepaid leaf, so the
//     guest runs at most Fuel units, plus one region, between two passes through Go (see
//     RATIONALE.md, "Deadlines that hold for every instruction");
//   - every bulk memory and table instruction whose work grows with an operand
//     (memory.fill, memory.copy, memory.init, table.fill, table.copy, table.init,
//     table.grow) replaced by a call to an added helper that charges fuel for the length
//     and, above ChunkBytes or ChunkElements, does the work in chunks with a fuel check
//     between them. The results and traps are the original instruction's: a range out of
//     bounds is found before anything is written (and the original instruction then traps),
//     an overlapping copy runs from the end when the destination is above the source, and
//     table.grow is all or nothing;
//   - every memory.grow replaced by a call to an added function that charges PageCost per
//     page and records a failure in ExportGrowFailed, so that a memory limit is told apart
//     from any other trap;
//   - the memory's maximum clamped to maxPages when maxPages > 0, and the defined tables'
//     maxima lowered so that together they hold at most MaxTableElements (clampTables);
//   - the constant globals folded away: every defined global that is immutable, not
//     exported and initialised by one i32, i64, f32, f64 or v128 .const is no longer defined,
//     and every global.get of it in code is that constant, so that wazero does not allocate
//     and initialise it for every instance (RATIONALE.md, "Constant globals folded at
//     instrument time"). One that a global.set names (an invalid module) or a constant
//     expression reads (which wazero allows only in element segments, with extended-const)
//     stays, so that wazero judges the copy as it judges the original;
//   - DWARF custom sections dropped, since the code offsets they name have moved.
//
// Function indices of the original module do not move: the additions are appended. Imported
// globals do not move; a defined global moves down by the number of folded globals before it
// (in code, constant expressions and exports; the name section's global names are dropped),
// and the three added globals follow the remaining ones. A module with nothing to fold comes
// out as it would without folding, byte for byte. A global.get or global.set of a global the
// module does not have, or an export of one, is refused (ErrMalformed) rather than left to
// wazero: after the additions its index would name one of them. So is every reference to a
// function or a type the module does not have, in code (call, return_call, ref.func,
// call_indirect, return_call_indirect, call_ref, return_call_ref, a block type, the heap type
// of ref.null), in exports, element segments, the start section, constant expressions
// (ref.func), the function, tag and import sections: it would name an added helper, which
// the guest could call (the safe point refills the fuel), or the type of one.
func Instrument(m *Module, maxPages uint32) ([]byte, error) {
	return instrument(m, maxPages, ChunkBytes, ChunkElements, nil)
}

// instrument is Instrument with the chunk sizes as parameters, so that tests can cut small
// ranges into many chunks. With snap, it is InstrumentSnapshot, and fills snap in.
func instrument(m *Module, maxPages uint32, memChunk, tabChunk int32, snap *Snapshot) ([]byte, error) {
	importedMems := 0
	for _, im := range m.Imports {
		if im.Kind == KindMemory {
			importedMems++
		}
	}
	if importedMems+len(m.Memories) != 1 {
		return nil, fmt.Errorf("%w: %d memories; exactly one is needed", ErrMalformed, importedMems+len(m.Memories))
	}
	if importedMems > 0 && maxPages > 0 {
		return nil, fmt.Errorf("%w: an imported memory cannot be limited", ErrMalformed)
	}
	if err := checkData(m); err != nil {
		return nil, err
	}
	if err := checkGlobalExports(m); err != nil {
		return nil, err
	}
	if err := checkIndices(m); err != nil {
		return nil, err
	}

	nTypes := uint32(len(m.Types))
	var newTypes []byte
	var addedSigs []FuncType
	typeOf := func(params, results []byte) uint32 {
		if i, ok := m.findType(params, results); ok {
			return i
		}
		for i, t := range addedSigs {
			if string(t.Params) == string(params) && string(t.Results) == string(results) {
				return uint32(len(m.Types) + i)
			}
		}
		addedSigs = append(addedSigs, FuncType{Params: params, Results: results})
		newTypes = append(newTypes, 0x60)
		newTypes = appendName(newTypes, string(params))
		newTypes = appendName(newTypes, string(results))
		nTypes++
		return nTypes - 1
	}
	growType := typeOf([]byte{0x7f}, []byte{0x7f})
	slowType := typeOf(nil, nil)

	in := &instrumenter{
		m:      m,
		growFn: m.NumImportedFuncs + uint32(len(m.Funcs)),
		helper: map[helperKey]uint32{},

		memChunk: memChunk,
		tabChunk: tabChunk,
	}
	in.slowFn = in.growFn + 1
	for _, im := range m.Imports {
		if im.Kind == KindTable {
			in.tables = append(in.tables, im.Table)
		}
	}
	in.tables = append(in.tables, m.Tables...)
	if err := in.analyse(); err != nil {
		return nil, err
	}
	if err := in.foldGlobals(); err != nil {
		return nil, err
	}

	bodies := make([][]byte, 0, len(m.bodies)+2)
	for i, body := range m.bodies {
		nb, err := in.rewriteBody(uint32(i), body)
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", m.NumImportedFuncs+uint32(i), err)
		}
		bodies = append(bodies, nb)
	}
	bodies = append(bodies, in.growBody(), in.slowBody())
	funcs := appendU32(nil, growType)
	funcs = appendU32(funcs, slowType)
	for _, k := range in.helpers {
		params, results := in.helperType(k)
		funcs = appendU32(funcs, typeOf(params, results))
		bodies = append(bodies, in.helperBody(k))
	}
	nFuncs := uint32(2 + len(in.helpers))
	var snapExports []byte
	var nSnapExports uint32
	var data dataPlan
	if snap != nil {
		var err error
		if data, snap.Why, err = in.planSnapshot(snap); err != nil {
			return nil, err
		}
		export := func(name string, kind byte, idx uint32) {
			snapExports = appendName(snapExports, name)
			snapExports = append(append(snapExports, kind), appendU32(nil, idx)...)
			nSnapExports++
		}
		if data.ok {
			snap.InitData = true
			funcs = appendU32(funcs, slowType)
			bodies = append(bodies, data.body)
			export(ExportInitData, KindFunc, m.NumImportedFuncs+uint32(len(m.Funcs))+nFuncs)
			nFuncs++
		}
		if m.HasStart {
			snap.Start = true
			export(ExportStart, KindFunc, m.start())
		}
		for _, g := range snap.Globals {
			export(GlobalExport(g), KindGlobal, g)
		}
	}
	addedTypes := nTypes - uint32(len(m.Types))

	globals := []byte{
		0x7f, 0x01, 0x41, 0x00, 0x0b, // interrupt: mut i32 = 0
		0x7f, 0x01, 0x41, 0x00, 0x0b, // grow_failed: mut i32 = 0
		0x7f, 0x01, 0x41, // fuel: mut i32 = Fuel
	}
	globals = appendS32(globals, Fuel)
	globals = append(globals, 0x0b)
	var exports []byte
	for i, name := range []string{ExportInterrupt, ExportGrowFailed} {
		exports = appendName(exports, name)
		exports = append(exports, KindGlobal)
		exports = appendU32(exports, in.intr+uint32(i))
	}
	exports = appendName(exports, ExportSafePoint)
	exports = append(exports, KindFunc)
	exports = appendU32(exports, in.slowFn)
	exports = append(exports, snapExports...)

	var code []byte
	for _, b := range bodies {
		code = appendU32(code, uint32(len(b)))
		code = append(code, b...)
	}

	out := []byte(magicVersion)
	added := map[byte]bool{}
	emit := func(id byte, payload []byte) {
		out = append(out, id)
		out = appendU32(out, uint32(len(payload)))
		out = append(out, payload...)
	}
	// extend appends n entries to a vector section's payload (or makes a new one).
	extend := func(payload []byte, n uint32, entries []byte) []byte {
		var count uint32
		rest := payload
		if payload != nil {
			r := reader{b: payload}
			count = r.u32()
			rest = payload[r.off:]
		}
		p := appendU32(nil, count+n)
		p = append(p, rest...)
		return append(p, entries...)
	}
	newSection := func(id byte, payload []byte) []byte {
		switch id {
		case secType:
			return extend(payload, addedTypes, newTypes)
		case secFunction:
			return extend(payload, nFuncs, funcs)
		case secGlobal:
			return extend(payload, 3, globals)
		case secExport:
			return extend(payload, 3+nSnapExports, exports)
		case secCode:
			return append(appendU32(nil, uint32(len(bodies))), code...)
		case secDataCount:
			if data.payload != nil {
				return appendU32(nil, data.count)
			}
		case secData:
			if data.payload != nil {
				return data.payload
			}
		}
		return payload
	}
	addMissing := func(before int) {
		for _, id := range []byte{secType, secFunction, secGlobal, secExport, secDataCount, secCode} {
			if id == secDataCount && data.payload == nil {
				continue
			}
			if !added[id] && order(id) < before && (id != secType || addedTypes > 0) {
				emit(id, newSection(id, nil))
				added[id] = true
			}
		}
	}
	for _, s := range in.sections {
		if s.id == secCustom {
			r := reader{b: s.payload}
			if strings.HasPrefix(r.name(), ".debug") {
				continue
			}
			emit(s.id, s.payload)
			continue
		}
		addMissing(order(s.id))
		p := clampTables(s.id, s.payload)
		switch s.id {
		case secMemory:
			var err error
			if p, err = clampMemory(m.Memories, maxPages); err != nil {
				return nil, err
			}
		case secType, secFunction, secGlobal, secExport, secCode, secDataCount, secData:
			p = newSection(s.id, p)
		case secStart:
			if snap != nil {
				continue // exported as ExportStart instead
			}
		}
		emit(s.id, p)
		added[s.id] = true
	}
	addMissing(1 << 30)
	return out, nil
}

func (m *Module) findType(params, results []byte) (uint32, bool) {
	for i, t := range m.Types {
		if string(t.Params) == string(params) && string(t.Results) == string(results) {
			return uint32(i), true
		}
	}
	return 0, false
}

func clampMemory(mems []Limits, maxPages uint32) ([]byte, error) {
	p := appendU32(nil, uint32(len(mems)))
	for _, l := range mems {
		if maxPages > 0 {
			if l.Min > uint64(maxPages) {
				return nil, fmt.Errorf("%w: the module needs %d pages at start, the limit is %d", ErrMinAboveLimit, l.Min, maxPages)
			}
			if !l.HasMax || l.Max > uint64(maxPages) {
				l.Max, l.HasMax = uint64(maxPages), true
			}
		}
		flags := byte(0)
		if l.HasMax {
			flags |= 0x01
		}
		if l.Shared {
			flags |= 0x02
		}
		p = appendLimits(append(p, flags), l)
	}
	return p, nil
}

func appendLimits(p []byte, l Limits) []byte {
	p = appendU32(p, uint32(l.Min))
	if l.HasMax {
		p = appendU32(p, uint32(l.Max))
	}
	return p
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func appendS32(b []byte, v int32) []byte { return appendS64(b, int64(v)) }

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
