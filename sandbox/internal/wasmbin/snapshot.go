package wasmbin

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
)

// Names of the exports that InstrumentSnapshot adds.
const (
	// ExportInitData is a function that writes the module's data segments into its memory,
	// in their order, as instantiation would have: InstrumentSnapshot makes every active
	// segment passive, so that an instance restored from a snapshot skips the work.
	ExportInitData = "wasmvisor:init_data"
	// ExportStart is the module's start function, whose section InstrumentSnapshot removes.
	ExportStart = "wasmvisor:start"
	// ExportGlobalPrefix starts the name of each mutable defined global, exported so that
	// the host can read and restore it; the rest of the name is the global's index in the
	// rewritten module (lower than in the original when constant globals before it were
	// folded: see Instrument).
	ExportGlobalPrefix = "wasmvisor:global:"
)

// MergeGap is the largest run of zeros that joins two data segments into one: a standard-Go
// module has tens of thousands of small segments, which wazero (and memory.init) would
// otherwise apply one by one.
const MergeGap = 256

// Snapshot describes what InstrumentSnapshot did to a module.
type Snapshot struct {
	// Why is empty when an instance's state can be captured and restored: memory and the
	// exported globals are all of it. Otherwise it says why not; the module then runs as
	// usual, initialized by its own code.
	Why string
	// InitData: the module exports ExportInitData, which must run before anything else.
	InitData bool
	// Start: the module exports ExportStart, which must run after ExportInitData.
	Start bool
	// Globals are the indices, in the rewritten module, of the mutable defined globals,
	// exported as ExportGlobalPrefix followed by the index. An index is the global's in the
	// original module less the constant globals folded before it (see Instrument).
	Globals []uint32
	// UsesData: the module's own code names data segments (memory.init, data.drop), so that
	// which of its passive segments are dropped is state beyond memory and globals.
	UsesData bool
}

// GlobalExport names the export of mutable global idx, an index in the rewritten module (an
// element of Snapshot.Globals).
func GlobalExport(idx uint32) string { return ExportGlobalPrefix + strconv.FormatUint(uint64(idx), 10) }

// InstrumentSnapshot is Instrument, plus what a host needs to initialize an instance once and
// restore its state into the next ones:
//
//   - every active data segment made passive, after adjacent ones (gaps of at most MergeGap
//     zero bytes, none overlapping anything earlier; sorted by offset first when no two
//     segments overlap) are merged, and written by an added
//     function, ExportInitData, in the original order at the original offsets (memory.init
//     then data.drop); a data count section is added. When the module's code names data
//     segments itself (memory.init, data.drop), the original segments keep their indices:
//     active ones become empty passive ones and the merged ones are appended. A segment
//     whose offset is not an i32.const is left alone, and the module is not snapshottable;
//   - the start section removed, its function exported as ExportStart;
//   - every mutable defined global exported as GlobalExport(index), with its index in the
//     rewritten module.
//
// A module whose state is more than its memory and globals is not snapshottable (Why says
// so): one whose code can change a table (table.set, table.grow, table.fill, table.copy,
// table.init, elem.drop), one that imports or exports a table, one with a mutable global of a
// vector or reference type. Indices move as Instrument says: function indices do not, defined
// global indices move down past the folded constant globals.
func InstrumentSnapshot(m *Module, maxPages uint32) ([]byte, Snapshot, error) {
	var s Snapshot
	out, err := instrument(m, maxPages, ChunkBytes, ChunkElements, &s)
	return out, s, err
}

// dataPlan is the rewritten data section and the body of ExportInitData.
type dataPlan struct {
	payload []byte // the new data section; nil when it is unchanged
	count   uint32 // segments in payload
	body    []byte // ExportInitData's body
	ok      bool   // the data is written by ExportInitData, not by instantiation
}

type dataSegment struct {
	passive bool
	off     uint32
	data    []byte
}

// planData reads the data section and plans its rewrite. why is non-empty when the section
// must stay as it is.
func planData(payload []byte, keepIndices bool) (plan dataPlan, why string, err error) {
	plan.body = []byte{0x00, 0x0b} // no locals; end
	if payload == nil {
		plan.ok = true
		return plan, "", nil
	}
	r := reader{b: payload}
	n := r.count()
	segs := make([]dataSegment, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		var sg dataSegment
		switch flags := r.u32(); flags {
		case 1:
			sg.passive = true
		case 0, 2:
			if flags == 2 {
				if mem := r.u32(); mem != 0 && r.err == nil {
					return plan, "", fmt.Errorf("%w: data segment %d on memory %d", ErrMalformed, i, mem)
				}
			}
			if op := r.byte(); op != 0x41 {
				return plan, fmt.Sprintf("data segment %d: its offset is not an i32.const", i), r.err
			}
			sg.off = uint32(r.s32())
			if r.byte() != 0x0b && r.err == nil {
				return plan, fmt.Sprintf("data segment %d: its offset is not an i32.const", i), nil
			}
		default:
			r.fail("unknown data segment flags %d", flags)
		}
		sg.data = r.bytes(r.u32())
		segs = append(segs, sg)
	}
	if r.err != nil {
		return plan, "", r.err
	}

	// Merge the active segments, in order; when no two overlap, the order does not matter
	// and they are merged sorted by offset (a Go module lists its segments out of order).
	var active []dataSegment
	for _, sg := range segs {
		if !sg.passive {
			active = append(active, sg)
		}
	}
	sorted := slices.Clone(active)
	slices.SortStableFunc(sorted, func(a, b dataSegment) int { return cmp.Compare(a.off, b.off) })
	overlap := false
	for k := 1; k < len(sorted); k++ {
		if uint64(sorted[k].off) < uint64(sorted[k-1].off)+uint64(len(sorted[k-1].data)) {
			overlap = true
			break
		}
	}
	if !overlap {
		active = sorted
	}
	var groups []dataSegment
	var maxEnd uint64
	for _, sg := range active {
		start, end := uint64(sg.off), uint64(sg.off)+uint64(len(sg.data))
		if k := len(groups) - 1; k >= 0 {
			g := &groups[k]
			gEnd := uint64(g.off) + uint64(len(g.data))
			// The gap is above every earlier segment: nothing has written it.
			if start >= maxEnd && start-gEnd <= MergeGap {
				g.data = append(g.data, make([]byte, start-gEnd)...)
				g.data = append(g.data, sg.data...)
				maxEnd = max(maxEnd, end)
				continue
			}
		}
		groups = append(groups, dataSegment{off: sg.off, data: append([]byte(nil), sg.data...)})
		maxEnd = max(maxEnd, end)
	}

	var base uint32
	var p []byte
	if keepIndices {
		for _, sg := range segs {
			p = append(p, 0x01)
			if sg.passive {
				p = appendU32(p, uint32(len(sg.data)))
				p = append(p, sg.data...)
			} else {
				p = append(p, 0x00) // an empty passive segment holds the index
			}
		}
		base = uint32(len(segs))
	}
	body := []byte{0x00}
	for k, g := range groups {
		p = append(p, 0x01)
		p = appendU32(p, uint32(len(g.data)))
		p = append(p, g.data...)
		idx := base + uint32(k)
		body = append(body, 0x41)
		body = appendS32(body, int32(g.off))
		body = append(body, 0x41, 0x00, 0x41)
		body = appendS32(body, int32(uint32(len(g.data))))
		body = append(body, 0xfc, opMemoryInit)
		body = appendU32(body, idx)
		body = append(body, 0x00, 0xfc, 0x09)
		body = appendU32(body, idx)
	}
	plan.body = append(body, 0x0b)
	plan.count = base + uint32(len(groups))
	plan.payload = append(appendU32(nil, plan.count), p...)
	plan.ok = true
	return plan, "", nil
}

// planSnapshot plans the data rewrite and lists the globals to export. why is non-empty when
// the module is not snapshottable.
func (in *instrumenter) planSnapshot(snap *Snapshot) (data dataPlan, why string, err error) {
	m := in.m
	var payload []byte
	for _, s := range in.sections {
		if s.id == secData {
			payload = s.payload
		}
	}
	snap.UsesData = in.usesData
	data, why, err = planData(payload, in.usesData)
	if err != nil {
		return data, "", fmt.Errorf("data section: %w", err)
	}
	imported := m.NumGlobals - uint32(len(m.Globals))
	for i, g := range m.Globals {
		if !g.Mutable {
			continue
		}
		switch g.ValType {
		case 0x7f, 0x7e, 0x7d, 0x7c: // i32, i64, f32, f64
			snap.Globals = append(snap.Globals, in.fold.index(imported+uint32(i)))
		default:
			if why == "" {
				why = fmt.Sprintf("mutable global %d has type 0x%02x, which the host cannot restore", imported+uint32(i), g.ValType)
			}
		}
	}
	if why == "" {
		why = in.snapshotWhy()
	}
	return data, why, nil
}

// start returns the start function's index; the module has a start section.
func (m *Module) start() uint32 {
	for _, s := range m.sections {
		if s.id == secStart {
			r := reader{b: s.payload}
			return r.u32()
		}
	}
	return 0
}

// snapshotWhy says why a module's state is more than its memory and globals, or "".
func (in *instrumenter) snapshotWhy() string {
	for _, im := range in.m.Imports {
		if im.Kind == KindTable {
			return fmt.Sprintf("it imports a table (%q.%q)", im.Module, im.Name)
		}
	}
	for _, ex := range in.m.Exports {
		if ex.Kind == KindTable {
			return fmt.Sprintf("it exports a table (%q)", ex.Name)
		}
	}
	if in.tableWrite != "" {
		return "its code can change a table (" + in.tableWrite + ")"
	}
	return ""
}
