package wasmbin

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// dataModule is idxModule whose function 1 runs code1, with one passive data segment and,
// when count >= 0, a data count section saying count.
func dataModule(code1 []byte, count int) []byte {
	extra := [][]byte{sect(secData, cat([]byte{0x01}, appendName(nil, "abcd")))}
	if count >= 0 {
		n := appendU32(nil, uint32(count))
		extra = append(extra, append(appendU32([]byte{secDataCount}, uint32(len(n))), n...))
	}
	return idxModule(i32Const(7), code1, extra...)
}

func memoryInit(seg uint32) []byte {
	return cat(i32Const(0), i32Const(0), i32Const(4), appendU32([]byte{0xfc, 0x08}, seg), []byte{0x00})
}

func dataDrop(seg uint32) []byte { return appendU32([]byte{0xfc, 0x09}, seg) }

// TestInstrumentRefusesDataIndices: InstrumentSnapshot appends its merged data segments and
// writes a data count section, so a memory.init or data.drop naming a segment past the
// module's, one in a module without a data count section, and a data count that does not
// count the segments, all refused by wazero as written, would be accepted in the copy:
// Instrument refuses them (ErrMalformed); their counterparts instrument and compile.
func TestInstrumentRefusesDataIndices(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, c := range []struct {
		name, want string
		bad, good  []byte
	}{
		{"memory.init", "data segment index 1 out of range (1 segments)", dataModule(memoryInit(1), 1), dataModule(memoryInit(0), 1)},
		{"data.drop", "data segment index 1 out of range (1 segments)", dataModule(dataDrop(1), 1), dataModule(dataDrop(0), 1)},
		{"no data count", "without a data count section", dataModule(memoryInit(0), -1), dataModule(memoryInit(0), 1)},
		{"data count", "the data count section says 2 segments, the data section has 1", dataModule(nil, 2), dataModule(nil, 1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := rt.CompileModule(ctx, c.bad); err == nil {
				t.Fatal("wazero accepts the module")
			}
			m, err := Parse(c.bad)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Instrument(m, 0); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Instrument: %v, want ErrMalformed and %q", err, c.want)
			}
			if _, _, err := InstrumentSnapshot(m, 0); !errors.Is(err, ErrMalformed) {
				t.Errorf("InstrumentSnapshot: %v, want ErrMalformed", err)
			}
			if _, err := rt.CompileModule(ctx, c.good); err != nil {
				t.Fatalf("the counterpart: wazero refuses it: %v", err)
			}
			if m, err = Parse(c.good); err != nil {
				t.Fatal(err)
			}
			plain, err := Instrument(m, 0)
			if err != nil {
				t.Fatalf("the counterpart: Instrument: %v", err)
			}
			snap, _, err := InstrumentSnapshot(m, 0)
			if err != nil {
				t.Fatalf("the counterpart: InstrumentSnapshot: %v", err)
			}
			for _, bin := range [][]byte{plain, snap} {
				if _, err := rt.CompileModule(ctx, bin); err != nil {
					t.Fatalf("the counterpart: wazero refuses the copy: %v", err)
				}
			}
		})
	}
}
