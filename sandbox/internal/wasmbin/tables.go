package wasmbin

import (
	"errors"
	"fmt"
)

// MaxTableElements bounds the elements of all the tables of one instance together: a table
// lives in host memory (wazero keeps 8 bytes per element), outside the linear memory's limit,
// so a guest that could table.grow without bound could take the host's memory. 2^18 elements
// are 2 MiB of host memory; a Go plugin's table, one element per function, holds about 6,000.
const MaxTableElements = 1 << 18

// ErrTablesAboveLimit is returned by CheckTables when a module's tables need more elements
// at start than MaxTableElements.
var ErrTablesAboveLimit = errors.New("table minimum above the limit")

// CheckTables returns an error wrapping ErrTablesAboveLimit if the tables the module defines
// need more than MaxTableElements elements at start. (An imported table cannot be linked: the
// host provides none.)
func CheckTables(m *Module) error {
	var sum uint64
	for _, l := range definedTables(m) {
		sum += l.Min
	}
	if sum > MaxTableElements {
		return fmt.Errorf("%w: the tables need %d elements at start, the limit is %d", ErrTablesAboveLimit, sum, MaxTableElements)
	}
	return nil
}

// definedTables reads the limits of the tables the module defines.
func definedTables(m *Module) []Limits {
	var ts []Limits
	for _, s := range m.sections {
		if s.id != secTable {
			continue
		}
		r := reader{b: s.payload}
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.byte() // reftype
			ts = append(ts, r.limits())
		}
	}
	return ts
}

// clampTables returns a section's payload, with, for the table section, every table's
// maximum lowered so that the tables together never hold more than MaxTableElements: each
// may grow by an equal share of what their minimums leave. table.grow past a maximum returns
// -1, as the specification says, and the guest carries on or traps as it likes. A payload it
// cannot read, or whose minimums are already above the limit (CheckTables refuses the
// module), is returned as it is.
func clampTables(id byte, payload []byte) []byte {
	if id != secTable {
		return payload
	}
	r := reader{b: payload}
	n := r.count()
	type table struct {
		reftype byte
		l       Limits
	}
	ts := make([]table, 0, n)
	var sum uint64
	for i := uint32(0); i < n && r.err == nil; i++ {
		t := table{reftype: r.byte(), l: r.limits()}
		if t.l.Shared {
			return payload // invalid: left for wazero to refuse
		}
		sum += t.l.Min
		ts = append(ts, t)
	}
	if r.err != nil || !r.done() || sum > MaxTableElements || n == 0 {
		return payload
	}
	share := (MaxTableElements - sum) / uint64(n)
	p := appendU32(nil, n)
	for _, t := range ts {
		if !t.l.HasMax || t.l.Max > t.l.Min+share {
			t.l.Max, t.l.HasMax = t.l.Min+share, true
		}
		p = append(p, t.reftype, 0x01)
		p = appendU32(p, uint32(t.l.Min))
		p = appendU32(p, uint32(t.l.Max))
	}
	return p
}
