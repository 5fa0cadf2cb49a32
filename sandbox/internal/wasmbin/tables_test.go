package wasmbin

import (
	"context"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// tablesModule is a module with one memory and the given table section payload.
func tablesModule(tables []byte) []byte {
	b := []byte(magicVersion)
	b = append(b, secTable)
	b = appendU32(b, uint32(len(tables)))
	b = append(b, tables...)
	return append(b, secMemory, 3, 1, 0x00, 1) // one memory, min 1
}

// TestTablesAreClamped: the tables' maxima are lowered so that together they never exceed
// MaxTableElements, a smaller declared maximum is kept, and a module whose tables need more
// than the limit at start is refused.
func TestTablesAreClamped(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)

	// funcref min 1, no max; externref min 10, max 5,000,000; funcref min 2, max 3.
	tables := appendU32(nil, 3)
	tables = append(tables, 0x70, 0x00, 1)
	tables = append(tables, 0x6f, 0x01, 10)
	tables = appendU32(tables, 5_000_000)
	tables = append(tables, 0x70, 0x01, 2, 3)
	m, err := Parse(tablesModule(tables))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckTables(m); err != nil {
		t.Fatal(err)
	}
	bin, err := Instrument(m, 16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.CompileModule(ctx, bin); err != nil {
		t.Fatalf("the clamped module does not compile: %v", err)
	}
	out, err := Parse(bin)
	if err != nil {
		t.Fatal(err)
	}
	got := definedTables(out)
	share := uint64(MaxTableElements-13) / 3
	want := []Limits{{Min: 1, Max: 1 + share, HasMax: true}, {Min: 10, Max: 10 + share, HasMax: true}, {Min: 2, Max: 3, HasMax: true}}
	if len(got) != len(want) {
		t.Fatalf("%d tables, want %d", len(got), len(want))
	}
	var total uint64
	for n := range want {
		if got[n] != want[n] {
			t.Errorf("table %d: %+v, want %+v", n, got[n], want[n])
		}
		total += got[n].Max
	}
	if total > MaxTableElements {
		t.Errorf("the tables may hold %d elements together, limit %d", total, MaxTableElements)
	}

	big := appendU32(nil, 1)
	big = append(big, 0x70, 0x00)
	big = appendU32(big, MaxTableElements+1)
	if m, err = Parse(tablesModule(big)); err != nil {
		t.Fatal(err)
	}
	if err := CheckTables(m); !errors.Is(err, ErrTablesAboveLimit) {
		t.Fatalf("a table of %d elements at start: %v", MaxTableElements+1, err)
	}
}
