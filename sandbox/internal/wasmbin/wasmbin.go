// Package wasmbin reads the parts of a WebAssembly binary that wasmvisor needs (types,
// imports, exports, memories, function bodies) and rewrites a module so that the sandbox can
// interrupt it and cap its memory without wazero's per-call goroutine, with its constant
// globals folded into its code so that instantiation does not make them (Instrument), and, for
// snapshots, so that instantiation does nothing a snapshot makes redundant and the host can
// read and restore the module's state (InstrumentSnapshot).
//
// It is not a validator: wazero validates the rewritten module. It must, however, never panic
// and never accept bytes it cannot walk exactly, since every module a user loads passes here
// first (see FuzzParse).
package wasmbin

import (
	"errors"
	"fmt"
)

// ErrMalformed is returned for bytes that are not a WebAssembly binary this package can walk.
var ErrMalformed = errors.New("malformed wasm binary")

// Section IDs.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// order gives each known section its position in a valid module (the tag section sits
// between memory and global).
func order(id byte) int {
	switch id {
	case secType:
		return 1
	case secImport:
		return 2
	case secFunction:
		return 3
	case secTable:
		return 4
	case secMemory:
		return 5
	case secTag:
		return 6
	case secGlobal:
		return 7
	case secExport:
		return 8
	case secStart:
		return 9
	case secElement:
		return 10
	case secDataCount:
		return 11
	case secCode:
		return 12
	case secData:
		return 13
	}
	return 0
}

// External kinds of imports and exports.
const (
	KindFunc   byte = 0
	KindTable  byte = 1
	KindMemory byte = 2
	KindGlobal byte = 3
	KindTag    byte = 4
)

// KindName names an external kind.
func KindName(k byte) string {
	switch k {
	case KindFunc:
		return "function"
	case KindTable:
		return "table"
	case KindMemory:
		return "memory"
	case KindGlobal:
		return "global"
	case KindTag:
		return "tag"
	}
	return fmt.Sprintf("kind %d", k)
}

// FuncType is a function signature as value-type bytes.
type FuncType struct {
	Params, Results []byte
}

// Limits are a memory's page limits.
type Limits struct {
	Min    uint64
	Max    uint64
	HasMax bool
	Shared bool
}

// Table is a table's element type and limits.
type Table struct {
	RefType byte // 0x70 funcref, 0x6f externref
	Limits
}

// GlobalType is a global's value type and mutability.
type GlobalType struct {
	ValType byte
	Mutable bool
}

// Import is one import entry.
type Import struct {
	Module, Name string
	Kind         byte
	TypeIndex    uint32 // functions and tags
	Memory       Limits // memories
	Table        Table  // tables
}

// Export is one export entry.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// section is a section as it appears in the binary.
type section struct {
	id      byte
	payload []byte
}

// Module is what Parse learned of a binary.
type Module struct {
	Types    []FuncType
	Imports  []Import
	Funcs    []uint32 // type index of each defined function
	Memories []Limits // defined memories
	Tables   []Table  // defined tables
	Exports  []Export
	// NumGlobals counts imported plus defined globals.
	NumGlobals uint32
	// Globals are the types of the defined globals, after the imported ones.
	Globals []GlobalType
	// NumImportedFuncs counts imported functions.
	NumImportedFuncs uint32
	// HasStart is true when the module has a start section.
	HasStart bool

	sections []section
	bodies   [][]byte // code section entries, without their size prefix
	tags     []uint32 // type index of each defined tag
	numData  uint32   // data segments
	// dataCount is the data count section's count, and hasDataCount whether there is one:
	// memory.init and data.drop need it (see checkData).
	dataCount    uint32
	hasDataCount bool
}

// FuncType returns the type of function index idx (imports first), and whether it exists.
func (m *Module) FuncType(idx uint32) (FuncType, bool) {
	var ti uint32
	if idx < m.NumImportedFuncs {
		n := uint32(0)
		for _, im := range m.Imports {
			if im.Kind != KindFunc {
				continue
			}
			if n == idx {
				ti = im.TypeIndex
				break
			}
			n++
		}
	} else {
		d := idx - m.NumImportedFuncs
		if d >= uint32(len(m.Funcs)) {
			return FuncType{}, false
		}
		ti = m.Funcs[d]
	}
	if ti >= uint32(len(m.Types)) {
		return FuncType{}, false
	}
	return m.Types[ti], true
}

const magicVersion = "\x00asm\x01\x00\x00\x00"

// MaxLocals bounds the locals of one function, as other engines do (wasmtime: 50,000).
const MaxLocals = 50_000

// Parse reads b. It walks every section wazero would decode, and checks each vector count
// against the bytes left and each function's locals against MaxLocals, so that a hostile
// module cannot make the decoder behind it allocate without bound. It does not validate
// instructions or types: wazero does, on the rewritten module. It refuses the typed
// references of the function references proposal wherever a value type can be (ErrMalformed):
// wazero accepts some of them without that feature, and their heap type would throw the
// walks of this package out of step with wazero's.
func Parse(b []byte) (*Module, error) {
	if len(b) < 8 || string(b[:8]) != magicVersion {
		return nil, fmt.Errorf("%w: missing magic number or version 1 header", ErrMalformed)
	}
	m := &Module{}
	r := reader{b: b, off: 8}
	last := 0
	for !r.done() {
		id := r.byte()
		size := r.u32()
		payload := r.bytes(size)
		if r.err != nil {
			return nil, r.err
		}
		if id != secCustom {
			o := order(id)
			if o == 0 {
				return nil, fmt.Errorf("%w: unknown section id %d", ErrMalformed, id)
			}
			if o <= last {
				return nil, fmt.Errorf("%w: section id %d out of order or repeated", ErrMalformed, id)
			}
			last = o
		}
		m.sections = append(m.sections, section{id: id, payload: payload})
		if err := m.readSection(id, payload); err != nil {
			return nil, err
		}
	}
	if len(m.bodies) != len(m.Funcs) {
		return nil, fmt.Errorf("%w: %d function declarations but %d bodies", ErrMalformed, len(m.Funcs), len(m.bodies))
	}
	return m, nil
}

func (m *Module) readSection(id byte, payload []byte) error {
	r := reader{b: payload}
	switch id {
	case secType:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			if form := r.byte(); form != 0x60 && r.err == nil {
				return fmt.Errorf("%w: type %d is not a function type (0x%02x)", ErrMalformed, i, form)
			}
			p := r.valTypes()
			res := r.valTypes()
			m.Types = append(m.Types, FuncType{Params: p, Results: res})
		}
	case secImport:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			im := Import{Module: r.name(), Name: r.name(), Kind: r.byte()}
			switch im.Kind {
			case KindFunc:
				im.TypeIndex = r.u32()
				m.NumImportedFuncs++
			case KindTable:
				im.Table = Table{RefType: r.valType(), Limits: r.limits()}
			case KindMemory:
				im.Memory = r.limits()
			case KindGlobal:
				r.valType()
				r.byte() // mutability
				m.NumGlobals++
			case KindTag:
				r.byte() // attribute
				im.TypeIndex = r.u32()
			default:
				if r.err == nil {
					return fmt.Errorf("%w: import %q.%q has unknown kind %d", ErrMalformed, im.Module, im.Name, im.Kind)
				}
			}
			m.Imports = append(m.Imports, im)
		}
	case secFunction:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			m.Funcs = append(m.Funcs, r.u32())
		}
	case secMemory:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			m.Memories = append(m.Memories, r.limits())
		}
	case secGlobal:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			g := GlobalType{ValType: r.valType(), Mutable: r.byte() == 1}
			r.skipConstExpr()
			m.Globals = append(m.Globals, g)
			m.NumGlobals++
		}
	case secExport:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			m.Exports = append(m.Exports, Export{Name: r.name(), Kind: r.byte(), Index: r.u32()})
		}
	case secStart:
		r.u32()
		m.HasStart = true
	case secCode:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			body := r.bytes(r.u32())
			if err := checkLocals(body); err != nil {
				return fmt.Errorf("function body %d: %w", i, err)
			}
			m.bodies = append(m.bodies, body)
		}
	case secTable:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			m.Tables = append(m.Tables, Table{RefType: r.valType(), Limits: r.limits()})
		}
	case secElement:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.skipElementSegment()
		}
	case secData:
		n := r.count()
		m.numData = n
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.dataSegment(r.skipConstExpr)
		}
	case secDataCount:
		m.dataCount, m.hasDataCount = r.u32(), true
	case secTag:
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.byte() // attribute
			m.tags = append(m.tags, r.u32())
		}
	default:
		return nil
	}
	if r.err != nil {
		return fmt.Errorf("section %d: %w", id, r.err)
	}
	if !r.done() {
		return fmt.Errorf("%w: section %d has %d trailing bytes", ErrMalformed, id, len(r.b)-r.off)
	}
	return nil
}

// checkLocals walks a function body's local declarations and bounds their total.
func checkLocals(body []byte) error {
	r := reader{b: body}
	n := r.count()
	var total uint64
	for i := uint32(0); i < n && r.err == nil; i++ {
		total += uint64(r.u32())
		r.valType()
		if total > MaxLocals {
			return fmt.Errorf("%w: more than %d locals", ErrMalformed, MaxLocals)
		}
	}
	return r.err
}
