package wasmbin

import "fmt"

// globalRange is the error for a reference to global idx in a module of n globals. Instrument
// refuses it rather than leave it to wazero: the globals it appends would give the index a
// meaning, the guest's fuel or interrupt flag.
func globalRange(idx, n uint32) error {
	return fmt.Errorf("%w: global index %d out of range (%d globals)", ErrMalformed, idx, n)
}

// checkGlobalExports refuses an export of a global the module does not have.
func checkGlobalExports(m *Module) error {
	for _, ex := range m.Exports {
		if ex.Kind == KindGlobal && ex.Index >= m.NumGlobals {
			return fmt.Errorf("export %q: %w", ex.Name, globalRange(ex.Index, m.NumGlobals))
		}
	}
	return nil
}

// globalFold maps the globals of a module to those of its instrumented copy. A defined global
// is folded when it is immutable, not exported, initialised by one constant instruction of
// its own type, written by no global.set and read by no constant expression: the copy does
// not define it, and every global.get of it in code becomes that constant instruction. The
// other defined globals move down past the folded ones; imported globals never move.
//
// Why it is invisible: an immutable global holds its initial value for ever, and a global the
// module does not export cannot be reached from outside. A global.set of an immutable global
// makes the module invalid, and a constant expression may read a defined global only where
// the runtime allows it (wazero never does in global initialisers and data offsets, and does
// in element segments only with the extended-const feature): such a global stays, so that
// wazero judges the copy as it would the original.
type globalFold struct {
	imported uint32   // imported globals: never folded, never moved
	consts   [][]byte // per defined global: the constant that replaces its reads, or nil
	below    []uint32 // per defined global: how many folded globals precede it
	folded   uint32   // how many are folded
}

// foldGlobals plans the fold (after analyse, which finds the globals written), numbers the
// added globals after the module's remaining ones, and rewrites the sections that name
// globals.
func (in *instrumenter) foldGlobals() error {
	var err error
	if in.fold, err = planFold(in.m, in.written); err != nil {
		return err
	}
	base := in.m.NumGlobals - in.fold.folded
	in.intr, in.oom, in.fuel = base, base+1, base+2
	in.sections, err = in.fold.sections(in.m.sections)
	return err
}

// planFold chooses the globals to fold. written marks the globals some global.set names.
func planFold(m *Module, written []bool) (globalFold, error) {
	f := globalFold{imported: m.NumGlobals - uint32(len(m.Globals))}
	read := make([]bool, m.NumGlobals) // by a constant expression
	var entries [][]byte               // the global section's entries
	for _, s := range m.sections {
		if s.id != secGlobal && s.id != secElement && s.id != secData {
			continue
		}
		err := constExprs(s.id, s.payload, func(start, end int) error {
			expr := s.payload[start:end]
			if s.id == secGlobal {
				entries = append(entries, s.payload[start-2:end]) // value type, mutability, init
			}
			return exprGlobals(expr, func(idx uint32, _, _ int) error {
				if idx >= m.NumGlobals {
					return globalRange(idx, m.NumGlobals)
				}
				read[idx] = true
				return nil
			})
		})
		if err != nil {
			return f, fmt.Errorf("section %d: %w", s.id, err)
		}
	}
	if len(entries) != len(m.Globals) {
		return f, fmt.Errorf("%w: %d globals but %d initialisers", ErrMalformed, len(m.Globals), len(entries))
	}
	exported := make([]bool, m.NumGlobals)
	for _, ex := range m.Exports {
		if ex.Kind == KindGlobal && ex.Index < m.NumGlobals {
			exported[ex.Index] = true
		}
	}
	f.consts = make([][]byte, len(m.Globals))
	f.below = make([]uint32, len(m.Globals))
	for i, g := range m.Globals {
		f.below[i] = f.folded
		idx := f.imported + uint32(i)
		if g.Mutable || exported[idx] || written[idx] || read[idx] {
			continue
		}
		if f.consts[i] = constant(entries[i]); f.consts[i] != nil {
			f.folded++
		}
	}
	return f, nil
}

// constant returns the instruction that initialises global, a global section entry, when
// the global is immutable (its mutability byte is 0, not merely other than 1) and the
// instruction is the only one and a constant of the global's type (i32, i64, f32, f64 or
// v128 .const); otherwise nil. An integer is re-encoded in its shortest form, and only if it
// reads as a valid one.
func constant(global []byte) []byte {
	r := reader{b: global}
	valType := r.byte()
	if mut := r.byte(); mut != 0 {
		return nil
	}
	var c []byte
	switch op := r.byte(); {
	case op == 0x41 && valType == 0x7f:
		c = appendS32([]byte{op}, r.s32())
	case op == 0x42 && valType == 0x7e:
		c = appendS64([]byte{op}, r.s64())
	case op == 0x43 && valType == 0x7d:
		c = append([]byte{op}, r.bytes(4)...)
	case op == 0x44 && valType == 0x7c:
		c = append([]byte{op}, r.bytes(8)...)
	case op == 0xfd && valType == 0x7b && r.u32() == 12: // v128.const
		c = append([]byte{op, 12}, r.bytes(16)...)
	default:
		return nil
	}
	if end := r.byte(); r.err != nil || end != 0x0b || r.off != len(global) {
		return nil
	}
	return c
}

// index is the index in the copy of global idx, which is not folded.
func (f *globalFold) index(idx uint32) uint32 {
	if idx < f.imported || f.folded == 0 {
		return idx
	}
	return idx - f.below[idx-f.imported]
}

// appendAccess appends global.get or global.set (op) of global idx, in range: orig as it is
// when the index has not moved, the folded constant for a read of a folded global.
func (f *globalFold) appendAccess(out []byte, op byte, idx uint32, orig []byte) []byte {
	if idx >= f.imported && f.folded > 0 {
		if c := f.consts[idx-f.imported]; c != nil && op == 0x23 {
			return append(out, c...)
		}
	}
	if n := f.index(idx); n != idx {
		return appendU32(append(out, op), n)
	}
	return append(out, orig...)
}

// sections returns the module's sections with the folded globals taken out of the global
// section and every other index moved: in global initialisers, element and data segments,
// exports; the name section loses its global names. With nothing folded, they are the
// module's own.
func (f *globalFold) sections(ss []section) ([]section, error) {
	if f.folded == 0 {
		return ss, nil
	}
	out := make([]section, len(ss))
	for i, s := range ss {
		var err error
		switch s.id {
		case secGlobal:
			s.payload, err = f.globalSection(s.payload)
		case secElement, secData:
			s.payload, err = f.moveExprs(s.id, s.payload)
		case secExport:
			s.payload, err = f.exportSection(s.payload)
		case secCustom:
			s.payload = withoutGlobalNames(s.payload)
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
		out[i] = s
	}
	return out, nil
}

// globalSection rewrites the global section: the folded globals left out, the others'
// initialisers moved.
func (f *globalFold) globalSection(payload []byte) ([]byte, error) {
	r := reader{b: payload}
	n := r.count()
	out := appendU32(make([]byte, 0, len(payload)), n-f.folded)
	last, i := r.off, 0
	err := constExprs(secGlobal, payload, func(start, end int) error {
		var err error
		if f.consts[i] == nil {
			out = append(out, payload[last:start]...) // value type and mutability
			out, err = f.appendExpr(out, payload[start:end])
		}
		last, i = end, i+1
		return err
	})
	return out, err
}

// moveExprs rewrites the constant expressions of an element or data section.
func (f *globalFold) moveExprs(id byte, payload []byte) ([]byte, error) {
	out := make([]byte, 0, len(payload))
	last := 0
	err := constExprs(id, payload, func(start, end int) error {
		var err error
		out = append(out, payload[last:start]...)
		out, err = f.appendExpr(out, payload[start:end])
		last = end
		return err
	})
	return append(out, payload[last:]...), err
}

// appendExpr appends a constant expression with its global.get indices moved. It reads no
// folded global (planFold keeps those a constant expression reads).
func (f *globalFold) appendExpr(out, expr []byte) ([]byte, error) {
	last := 0
	err := exprGlobals(expr, func(idx uint32, start, end int) error {
		out = append(out, expr[last:start]...)
		out = f.appendAccess(out, 0x23, idx, expr[start:end])
		last = end
		return nil
	})
	return append(out, expr[last:]...), err
}

// exportSection rewrites the export section with the global exports' indices moved.
func (f *globalFold) exportSection(payload []byte) ([]byte, error) {
	r := reader{b: payload}
	n := r.count()
	out := appendU32(make([]byte, 0, len(payload)), n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		start := r.off
		r.name()
		kind := r.byte()
		at := r.off
		idx := r.u32()
		out = append(out, payload[start:at]...)
		if kind == KindGlobal {
			out = appendU32(out, f.index(idx))
		} else {
			out = append(out, payload[at:r.off]...)
		}
	}
	return out, r.err
}

// withoutGlobalNames returns a custom section's payload, less the global names (subsection
// 7) when it is the name section: their indices have moved, and nothing in wazero reads them.
// A name section it cannot walk is returned as it is.
func withoutGlobalNames(payload []byte) []byte {
	r := reader{b: payload}
	if r.name() != "name" || r.err != nil {
		return payload
	}
	out := append([]byte(nil), payload[:r.off]...)
	for !r.done() {
		start := r.off
		id := r.byte()
		r.bytes(r.u32())
		if r.err != nil {
			return payload
		}
		if id != 7 {
			out = append(out, payload[start:r.off]...)
		}
	}
	return out
}

// constExprs calls f with the start and end of every constant expression of a global,
// element or data section's payload, in order, and stops at its first error.
func constExprs(id byte, payload []byte, f func(start, end int) error) error {
	r := reader{b: payload}
	expr := func() {
		start := r.off
		r.skipConstExpr()
		if r.err == nil {
			r.err = f(start, r.off)
		}
	}
	n := r.count()
	for i := uint32(0); i < n && r.err == nil; i++ {
		switch id {
		case secGlobal:
			r.valType()
			r.byte() // mutability
			expr()
		case secElement:
			r.elementSegment(expr, nil)
		case secData:
			r.dataSegment(expr)
		}
	}
	return r.err
}

// exprGlobals calls f with every global.get of a constant expression: the global's index and
// where the instruction starts and ends. It stops at f's first error.
func exprGlobals(expr []byte, f func(idx uint32, start, end int) error) error {
	return exprIndices(expr, 0x23, f)
}

// exprIndices calls f with every instruction op of a constant expression, one whose immediate
// is an index (global.get, ref.func): the index and where the instruction starts and ends. It
// stops at f's first error.
func exprIndices(expr []byte, op byte, f func(idx uint32, start, end int) error) error {
	r := reader{b: expr}
	for !r.done() {
		start := r.off
		if o := r.byte(); o != op {
			r.skipImmediates(o)
			continue
		}
		if idx := r.u32(); r.err == nil {
			r.err = f(idx, start, r.off)
		}
	}
	return r.err
}

// checkData refuses a data count section that does not count the data section's segments.
// wazero refuses it as written; InstrumentSnapshot writes a data count of its own, which
// would make the module valid.
func checkData(m *Module) error {
	if m.hasDataCount && m.dataCount != m.numData {
		return fmt.Errorf("%w: the data count section says %d segments, the data section has %d", ErrMalformed, m.dataCount, m.numData)
	}
	return nil
}

// checkDataRef reads the immediates of memory.init or data.drop (sub) and refuses them
// without a data count section, or naming a segment past the module's: InstrumentSnapshot
// adds a data count section and appends its merged segments, which would give either a
// meaning, as the globals and functions Instrument appends would give an index past the
// module's.
func (m *Module) checkDataRef(sub uint32, r *reader) error {
	idx := r.u32()
	if sub == opMemoryInit {
		if mem := r.u32(); mem != 0 {
			return fmt.Errorf("%w: memory.init on memory %d", ErrMalformed, mem)
		}
	}
	switch {
	case r.err != nil:
		return r.err
	case !m.hasDataCount:
		return fmt.Errorf("%w: memory.init or data.drop without a data count section", ErrMalformed)
	case idx >= m.numData:
		return fmt.Errorf("%w: data segment index %d out of range (%d segments)", ErrMalformed, idx, m.numData)
	}
	return nil
}
