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
			switch kind := r.byte(); kind {
			case KindFunc:
				r.u32()
			case KindTable:
				r.byte()
				r.limits()
			case KindMemory:
				r.limits()
			case KindGlobal:
				r.byte()
				r.byte()
			case KindTag:
				r.byte()
				r.u32()
			default:
				if r.err == nil {
					return 0, fmt.Errorf("%w: import %q.%q has unknown kind %d", ErrMalformed, mod, name, kind)
				}
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
