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
