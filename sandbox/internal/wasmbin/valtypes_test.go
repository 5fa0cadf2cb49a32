package wasmbin

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
)

// TestRefusesTypedReferences: a typed reference type, (ref null ht) or (ref ht), is refused
// wherever a value type can be, since the reader would take its heap type for the next byte's
// meaning. wazero accepts most of these modules with the sandbox's features (the proposal's
// feature off): the first two hide a loop inside the heap type, which would then get no fuel
// check, and a select of a typed reference makes wazero's compiler panic.
func TestRefusesTypedReferences(t *testing.T) {
	i32 := []byte{0x7f}
	// Four types, so that heap type 2 is a type of the module, and so is type 3, the block
	// type that the loop's opcode would be read as.
	types := sect(secType, funcType(nil, i32), funcType(nil, nil), funcType(nil, nil), funcType(nil, nil))
	raw := func(b ...byte) []byte { return append(appendU32(nil, uint32(len(b))), b...) }
	module := func(code []byte, extra ...[]byte) []byte {
		secs := append([][]byte{types, sect(secFunction, []byte{0}), sect(secExport, export("f", KindFunc, 0)),
			sect(secCode, code)}, extra...)
		return wasmModule(sorted(secs)...)
	}
	loop := []byte{0x03, 0x7f, 0x0c, 0x00, 0x0b} // loop (result i32) br 0 end
	for _, c := range []struct {
		name    string
		bin     []byte
		accepts bool // wazero accepts the module
	}{
		// One local of type (ref null 2): read as one byte, the heap type 2 would be a block
		// whose type is the loop's opcode.
		{"local", module(raw(cat([]byte{0x01, 0x01, typedRefNull, 0x02}, loop, []byte{0x0b})...), oneMemory), true},
		// block (result (ref null 2)) loop ... end unreachable end drop i32.const 7
		{"block type", module(body(cat([]byte{0x02, typedRefNull, 0x02}, loop, []byte{0x00, 0x0b, 0x1a}, i32Const(7))...), oneMemory), true},
		// block type -29 in two bytes is still (ref null ht)
		{"block type, padded", module(body(cat([]byte{0x02, 0xe3, 0x7f, 0x70, 0x00, 0x0b, 0x1a}, i32Const(7))...), oneMemory), true},
		{"select", module(body(0xd0, 0x70, 0xd0, 0x70, 0x41, 0x01, 0x1c, 0x01, typedRefNull, 0x70, 0x1a, 0x41, 0x07), oneMemory), false},
		{"global", module(body(i32Const(7)...), oneMemory, sect(secGlobal, []byte{typedRefNull, 0x70, 0x00, 0xd0, 0x70, 0x0b})), true},
		{"table", module(body(i32Const(7)...), sect(secTable, []byte{typedRefNull, 0x70, 0x00, 0x01}), oneMemory), true},
		{"element segment", module(body(i32Const(7)...), sect(secTable, []byte{0x70, 0x00, 0x01}), oneMemory,
			sect(secElement, []byte{0x05, typedRef, 0x70, 0x01, 0xd2, 0x00, 0x0b})), true},
		{"parameter", wasmModule(sect(secType, []byte{0x60, 0x01, typedRefNull, 0x70, 0x00}), sect(secFunction, []byte{0}), oneMemory,
			sect(secCode, body())), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.accepts {
				ctx := context.Background()
				rt := wazero.NewRuntime(ctx)
				defer rt.Close(ctx)
				if _, err := rt.CompileModule(ctx, c.bin); err != nil {
					t.Fatalf("wazero refuses the module: %v", err)
				}
			}
			m, err := Parse(c.bin)
			if err == nil {
				_, err = Instrument(m, 0)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse and Instrument: %v, want ErrMalformed", err)
			}
		})
	}
}

// sorted returns sections in the order a module must have them.
func sorted(secs [][]byte) [][]byte {
	return slices.SortedStableFunc(slices.Values(secs), func(a, b []byte) int { return cmp.Compare(order(a[0]), order(b[0])) })
}
