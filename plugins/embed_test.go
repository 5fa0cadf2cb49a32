package plugins

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestBuiltins(t *testing.T) {
	names := Builtins()
	if !slices.IsSorted(names) {
		t.Fatalf("Builtins() = %v, not sorted", names)
	}
	if !slices.Equal(names, []string{"authz", "ratelimit", "validate"}) {
		t.Fatalf("Builtins() = %v, want authz, ratelimit, validate", names)
	}
	for _, n := range names {
		b, ok := Builtin(n)
		if !ok {
			t.Fatalf("Builtin(%q) not found though listed", n)
		}
		if !bytes.HasPrefix(b, []byte("\x00asm")) {
			t.Errorf("Builtin(%q) is not a wasm module", n)
		}
		// The embedded bytes are the committed file next to the sources.
		want, err := os.ReadFile(filepath.Join(n, n+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("Builtin(%q) differs from %s/%s.wasm", n, n, n)
		}
	}
	if _, ok := Builtin("nope"); ok {
		t.Error(`Builtin("nope") found`)
	}
}
