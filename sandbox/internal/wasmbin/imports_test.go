package wasmbin

import (
	"context"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// importsMemory is a module that imports env.memory (1 page, at most 100) and a function
// env.f, and exports nothing: what OPA's modules look like, in small.
var importsMemory = []byte("\x00asm\x01\x00\x00\x00" +
	"\x01\x04\x01\x60\x00\x00" + // type 0: () -> ()
	"\x02\x18\x02" + // two imports
	"\x03env\x06memory\x02\x01\x01\x64" + // env.memory: min 1, max 100
	"\x03env\x01f\x00\x00") // env.f: type 0

func TestDefineImportedMemory(t *testing.T) {
	m, err := Parse(importsMemory)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := m.DefineImportedMemory()
	if err != nil || !changed {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	if len(m.Imports) != 1 || m.Imports[0].Name != "f" || len(m.Memories) != 1 || m.Memories[0].Min != 1 || m.Memories[0].Max != 100 {
		t.Fatalf("imports %+v, memories %+v", m.Imports, m.Memories)
	}
	bin, err := Instrument(m, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The rewritten module parses again with the same view, and wazero sees a memory of its
	// own, clamped to the limit, and the function import only.
	again, err := Parse(bin)
	if err != nil || len(again.Imports) != 1 || len(again.Memories) != 1 || again.Memories[0].Max != 10 {
		t.Fatalf("reparsed: %+v %v", again, err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if ims := cm.ImportedFunctions(); len(ims) != 1 {
		t.Fatalf("%d imported functions", len(ims))
	}
	if len(cm.ImportedMemories()) != 0 {
		t.Fatal("the memory is still imported")
	}

	// Nothing to do without an imported memory; refused with a defined one as well.
	if changed, err := again.DefineImportedMemory(); changed || err != nil {
		t.Fatalf("no imported memory: changed %v, err %v", changed, err)
	}
	both, err := Parse(importsMemory)
	if err != nil {
		t.Fatal(err)
	}
	both.Memories = []Limits{{Min: 1}}
	if _, err := both.DefineImportedMemory(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("imported and defined: %v", err)
	}
}
