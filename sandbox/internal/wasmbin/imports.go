package wasmbin

import "fmt"

// RenameImports changes the module name of the imports for which rename returns a new one
// (module, name) -> (newModule, true), in m's import section and in m.Imports, so that the
// binaries made from m afterwards (Instrument, InstrumentSnapshot) import them from there.
// Indices, kinds and types do not change. It returns how many imports it renamed.
func (m *Module) RenameImports(rename func(module, name string) (string, bool)) (int, error) {
	for si, s := range m.sections {
		if s.id != secImport {
			continue
		}
		r := reader{b: s.payload}
		n := r.count()
		out := appendU32(make([]byte, 0, len(s.payload)+64), n)
		renamed := 0
		for i := uint32(0); i < n && r.err == nil; i++ {
			mod, name := r.name(), r.name()
			descStart := r.off
			if kind, ok := r.skipImportDesc(); !ok && r.err == nil {
				return 0, fmt.Errorf("%w: import %q.%q has unknown kind %d", ErrMalformed, mod, name, kind)
			}
			if r.err != nil {
				break
			}
			if nm, ok := rename(mod, name); ok {
				mod = nm
				m.Imports[i].Module = nm
				renamed++
			}
			out = appendName(out, mod)
			out = appendName(out, name)
			out = append(out, s.payload[descStart:r.off]...)
		}
		if r.err != nil {
			return 0, r.err
		}
		m.sections[si].payload = out
		return renamed, nil
	}
	return 0, nil
}

// DefineImportedMemory turns the module's imported memory, if it has one, into a memory it
// defines with the same limits, so that each instance gets its own, which Instrument can
// clamp like any defined memory. It is for the formats whose modules import their memory
// from the host (OPA's env.memory): wazero resolves imports by module name, so a memory
// imported from "env" would be one memory for every instance of a runtime. The memory's
// index (0, the only one) does not change. It reports whether it changed the module; a
// module that also defines a memory is refused (ErrMalformed).
func (m *Module) DefineImportedMemory() (bool, error) {
	at := -1
	for i, im := range m.Imports {
		if im.Kind == KindMemory {
			at = i
			break
		}
	}
	if at < 0 {
		return false, nil
	}
	if len(m.Memories) > 0 {
		return false, fmt.Errorf("%w: a module that imports a memory and defines one", ErrMalformed)
	}
	lim := m.Imports[at].Memory
	for si, s := range m.sections {
		if s.id != secImport {
			continue
		}
		r := reader{b: s.payload}
		n := r.count()
		out := appendU32(make([]byte, 0, len(s.payload)), n-1)
		for i := uint32(0); i < n && r.err == nil; i++ {
			start := r.off
			r.name()
			r.name()
			if kind, ok := r.skipImportDesc(); !ok && r.err == nil {
				return false, fmt.Errorf("%w: import %d has unknown kind %d", ErrMalformed, i, kind)
			}
			if r.err != nil {
				return false, r.err
			}
			if int(i) != at {
				out = append(out, s.payload[start:r.off]...)
			}
		}
		m.sections[si].payload = out
		break
	}
	m.Imports = append(m.Imports[:at:at], m.Imports[at+1:]...)
	m.Memories = []Limits{lim}
	flags := byte(0)
	if lim.HasMax {
		flags |= 0x01
	}
	if lim.Shared {
		flags |= 0x02
	}
	mem := section{id: secMemory, payload: appendLimits(append(appendU32(nil, 1), flags), lim)}
	pos := len(m.sections)
	for i, s := range m.sections {
		if s.id != secCustom && order(s.id) > order(secMemory) {
			pos = i
			break
		}
	}
	m.sections = append(m.sections[:pos:pos], append([]section{mem}, m.sections[pos:]...)...)
	return true, nil
}

// skipImportDesc reads an import's kind and skips its description; ok is false for an
// unknown kind.
func (r *reader) skipImportDesc() (kind byte, ok bool) {
	switch kind = r.byte(); kind {
	case KindFunc:
		r.u32()
	case KindTable:
		r.valType()
		r.limits()
	case KindMemory:
		r.limits()
	case KindGlobal:
		r.valType()
		r.byte()
	case KindTag:
		r.byte()
		r.u32()
	default:
		return kind, false
	}
	return kind, true
}
