package wasmbin

import "fmt"

// funcRange is the error for a reference to function idx in a module of n functions (imported
// and defined). Instrument refuses it rather than leave it to wazero: the functions it appends
// would give the index a meaning, one of the sandbox's helpers (the safe point, which refills
// the fuel, the memory.grow or a bulk-memory helper), which the guest could then call, take a
// reference to, put in a table or export.
func funcRange(idx, n uint32) error {
	return fmt.Errorf("%w: function index %d out of range (%d functions)", ErrMalformed, idx, n)
}

// typeRange is the error for a reference to type idx in a module of n types: the types
// Instrument appends, the signatures of its helpers, would give the index a meaning.
func typeRange(idx, n uint32) error {
	return fmt.Errorf("%w: type index %d out of range (%d types)", ErrMalformed, idx, n)
}

// bounds are the sizes of a module's function and type index spaces, before Instrument adds
// to them.
type bounds struct {
	funcs, types uint32
}

func boundsOf(m *Module) bounds {
	return bounds{funcs: m.NumImportedFuncs + uint32(len(m.Funcs)), types: uint32(len(m.Types))}
}

func (b bounds) function(idx uint32) error {
	if idx >= b.funcs {
		return funcRange(idx, b.funcs)
	}
	return nil
}

func (b bounds) typ(idx uint32) error {
	if idx >= b.types {
		return typeRange(idx, b.types)
	}
	return nil
}

// checkIndices refuses a reference outside the code to a function or a type the module does
// not have: the type of an imported function or tag, of a defined function or tag; an exported
// function, the start function, a function an element segment lists, and a ref.func in a
// constant expression (of a global, an element segment or a data segment). The code's are
// refused as analyse walks it (bounds.instr). It also refuses a start function that takes or
// returns values.
//
// A ref.null in a constant expression may name any type: wazero does not bound it there, and
// a null reference calls nothing.
func checkIndices(m *Module) error {
	b := boundsOf(m)
	for _, im := range m.Imports {
		if im.Kind != KindFunc && im.Kind != KindTag {
			continue
		}
		if err := b.typ(im.TypeIndex); err != nil {
			return fmt.Errorf("import %q.%q: %w", im.Module, im.Name, err)
		}
	}
	for i, t := range m.Funcs {
		if err := b.typ(t); err != nil {
			return fmt.Errorf("function %d: %w", m.NumImportedFuncs+uint32(i), err)
		}
	}
	for i, t := range m.tags {
		if err := b.typ(t); err != nil {
			return fmt.Errorf("defined tag %d: %w", i, err)
		}
	}
	for _, ex := range m.Exports {
		if ex.Kind != KindFunc {
			continue
		}
		if err := b.function(ex.Index); err != nil {
			return fmt.Errorf("export %q: %w", ex.Name, err)
		}
	}
	if m.HasStart {
		start := m.start()
		if err := b.function(start); err != nil {
			return fmt.Errorf("start section: %w", err)
		}
		// InstrumentSnapshot exports the start function instead, where wazero no longer
		// requires it to take and return nothing.
		if t, _ := m.FuncType(start); len(t.Params)+len(t.Results) > 0 {
			return fmt.Errorf("%w: start function %d takes or returns values", ErrMalformed, start)
		}
	}
	refFunc := func(idx uint32, _, _ int) error { return b.function(idx) }
	for _, s := range m.sections {
		if s.id != secGlobal && s.id != secElement && s.id != secData {
			continue
		}
		err := constExprs(s.id, s.payload, func(start, end int) error {
			return exprIndices(s.payload[start:end], 0xd2, refFunc)
		})
		if s.id == secElement && err == nil {
			r := reader{b: s.payload}
			n := r.count()
			for i := uint32(0); i < n && r.err == nil; i++ {
				r.elementSegment(r.skipConstExpr, b.function)
			}
			err = r.err
		}
		if err != nil {
			return fmt.Errorf("section %d: %w", s.id, err)
		}
	}
	return nil
}

// instr reads the immediates of op, an instruction of code that has been read, as
// skipImmediates does, and refuses a function that it calls or takes a reference to (call,
// return_call, ref.func) or a type that it names (call_indirect, return_call_indirect,
// call_ref, return_call_ref, the block type of block, loop, if, try and try_table, the heap
// type of ref.null) when the module does not have it.
func (b bounds) instr(op byte, r *reader) error {
	at := r.off
	r.skipImmediates(op)
	if r.err != nil {
		return r.err
	}
	imm := reader{b: r.b[at:r.off]}
	switch op {
	case 0x10, 0x12, 0xd2: // call return_call ref.func
		return b.function(imm.u32())
	case 0x11, 0x13, 0x14, 0x15: // call_indirect return_call_indirect call_ref return_call_ref
		return b.typ(imm.u32())
	case 0x02, 0x03, 0x04, 0x06, 0x1f: // block loop if try try_table
		if t := imm.blockType(); t >= 0 {
			return b.typ(uint32(t))
		}
	case 0xd0: // ref.null
		// A heap type other than func, extern and exn is a type index, which wazero's
		// validator reads as an unsigned LEB128.
		if c := imm.b[0]; c != 0x70 && c != 0x6f && c != 0x69 {
			t := imm.u32()
			if imm.err != nil {
				return imm.err
			}
			return b.typ(t)
		}
	}
	return nil
}
