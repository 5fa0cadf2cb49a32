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
	// ReservedPrefix starts every name Instrument adds.
	ReservedPrefix = "wasmvisor:"
)

// ErrMinAboveLimit is returned by Instrument when the module's memory needs more pages at
// start than the limit allows.
var ErrMinAboveLimit = errors.New("memory minimum above the limit")

// Fuel is how many function entries and loop heads the guest passes between two safe points.
const Fuel = 1 << 14

// Instrument returns a copy of the module with:
//
//   - three mutable globals: ExportInterrupt (i32, exported, 0 while the guest may run; the
//     host writes 1 to stop it), ExportGrowFailed (i32, exported, set to 1 when memory.grow
//     fails) and a fuel counter (i32, not exported);
//   - at the head of every loop, and at the entry of every function that contains a call, a
//     countdown of the fuel; when it runs out, a call to an added function that refills it,
//     passes through the Go runtime (a memory.grow of zero pages, which wazero serves in Go,
//     where the goroutine can be preempted, so a spinning guest cannot stall a garbage
//     collection), and traps with unreachable if interrupt is not zero. The host thus stops a
//     running call by writing one global, with no goroutine per call (see RATIONALE.md,
//     "Deadlines"). A function with no call runs a bounded number of instructions between two
//     loop heads, so its entry needs no countdown: any unbounded run passes loop heads or the
//     entries of calling functions without bound;
//   - every memory.grow replaced by a call to an added function that records a failure in
//     ExportGrowFailed, so that a memory limit is told apart from any other trap;
//   - the memory's maximum clamped to maxPages when maxPages > 0;
//   - DWARF custom sections dropped, since the code offsets they name have moved.
//
// Function and global indices of the original module do not move: the additions are
// appended.
func Instrument(m *Module, maxPages uint32) ([]byte, error) {
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

	nTypes := uint32(len(m.Types))
	var newTypes []byte
	typeOf := func(params, results []byte) uint32 {
		if i, ok := m.findType(params, results); ok {
			return i
		}
		newTypes = append(newTypes, 0x60)
		newTypes = appendName(newTypes, string(params))
		newTypes = appendName(newTypes, string(results))
		nTypes++
		return nTypes - 1
	}
	growType := typeOf([]byte{0x7f}, []byte{0x7f})
	slowType := typeOf(nil, nil)
	addedTypes := nTypes - uint32(len(m.Types))

	intIdx, oomIdx, fuelIdx := m.NumGlobals, m.NumGlobals+1, m.NumGlobals+2
	growFn := m.NumImportedFuncs + uint32(len(m.Funcs))
	slowFn := growFn + 1

	// fuel--; if fuel == 0 { slow() }
	check := appendU32([]byte{0x23}, fuelIdx)
	check = append(check, 0x41, 0x01, 0x6b, 0x24) // i32.const 1 i32.sub global.set
	check = appendU32(check, fuelIdx)
	check = append(check, 0x23)
	check = appendU32(check, fuelIdx)
	check = append(check, 0x45, 0x04, 0x40, 0x10) // i32.eqz if call
	check = appendU32(check, slowFn)
	check = append(check, 0x0b)
	growCall := appendU32([]byte{0x10}, growFn)

	bodies := make([][]byte, 0, len(m.bodies)+2)
	for i, body := range m.bodies {
		nb, err := rewriteBody(body, check, growCall)
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", m.NumImportedFuncs+uint32(i), err)
		}
		bodies = append(bodies, nb)
	}
	grow := []byte{0x01, 0x01, 0x7f, // one i32 local
		0x20, 0x00, 0x40, 0x00, 0x22, 0x01, // local.get 0 memory.grow local.tee 1
		0x41, 0x7f, 0x46, 0x04, 0x40, // i32.const -1 i32.eq if
		0x41, 0x01, 0x24} // i32.const 1 global.set
	grow = appendU32(grow, oomIdx)
	grow = append(grow, 0x0b, 0x20, 0x01, 0x0b) // end local.get 1 end
	slow := []byte{0x00, 0x41}                  // no locals; i32.const Fuel
	slow = appendS32(slow, Fuel)
	slow = append(slow, 0x24)
	slow = appendU32(slow, fuelIdx)
	slow = append(slow, 0x41, 0x00, 0x40, 0x00, 0x1a, 0x23) // i32.const 0 memory.grow drop global.get
	slow = appendU32(slow, intIdx)
	slow = append(slow, 0x04, 0x40, 0x00, 0x0b, 0x0b) // if unreachable end end
	bodies = append(bodies, grow, slow)

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
		exports = appendU32(exports, intIdx+uint32(i))
	}
	funcs := appendU32(nil, growType)
	funcs = appendU32(funcs, slowType)

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
			return extend(payload, 2, funcs)
		case secGlobal:
			return extend(payload, 3, globals)
		case secExport:
			return extend(payload, 2, exports)
		case secCode:
			return append(appendU32(nil, uint32(len(bodies))), code...)
		}
		return payload
	}
	addMissing := func(before int) {
		for _, id := range []byte{secType, secFunction, secGlobal, secExport, secCode} {
			if !added[id] && order(id) < before && (id != secType || addedTypes > 0) {
				emit(id, newSection(id, nil))
				added[id] = true
			}
		}
	}
	for _, s := range m.sections {
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
		case secType, secFunction, secGlobal, secExport, secCode:
			p = newSection(s.id, p)
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
		p = append(p, flags)
		p = appendU32(p, uint32(l.Min))
		if l.HasMax {
			p = appendU32(p, uint32(l.Max))
		}
	}
	return p, nil
}

// rewriteBody inserts check after every loop's block type and, if the function contains a
// call, at its entry; it replaces memory.grow with growCall.
func rewriteBody(body, check, growCall []byte) ([]byte, error) {
	r := reader{b: body}
	nDecl := r.count()
	for i := uint32(0); i < nDecl && r.err == nil; i++ {
		r.u32()
		r.byte()
	}
	if r.err != nil {
		return nil, r.err
	}
	locals := r.off
	out := make([]byte, 0, len(body)+len(body)/8+len(check))
	out = append(out, body[:locals]...)
	out = append(out, check...) // removed below if the function makes no call
	calls := false
	for !r.done() {
		start := r.off
		op := r.byte()
		if op == 0x40 { // memory.grow
			if mem := r.u32(); r.err == nil && mem != 0 {
				return nil, fmt.Errorf("%w: memory.grow on memory %d", ErrMalformed, mem)
			}
			out = append(out, growCall...)
			continue
		}
		r.skipImmediates(op)
		out = append(out, body[start:r.off]...)
		switch op {
		case 0x03: // loop
			out = append(out, check...)
		case 0x10, 0x11, 0x12, 0x13, 0x14, 0x15: // call, call_indirect, return_call(_indirect), (return_)call_ref
			calls = true
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(body) == 0 || body[len(body)-1] != 0x0b {
		return nil, fmt.Errorf("%w: function body does not end with end", ErrMalformed)
	}
	if !calls {
		out = append(out[:locals], out[locals+len(check):]...)
	}
	return out, nil
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

func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
