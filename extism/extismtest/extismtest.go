// Package extismtest finds the real Extism plugins that ship with the Extism Go SDK's module
// (its wasm/ folder: Rust, C, TinyGo, Haskell and Go plugins built by the Extism project), so
// that tests run them without copying them into this repository.
package extismtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// SDKModule is the module path of the Extism Go SDK.
const SDKModule = "github.com/extism/go-sdk"

var (
	once sync.Once
	dir  string
	err  error
)

// Dir returns the SDK's wasm folder in the module cache, as `go list -m` reports it for the
// version this module requires (`go mod download` fetches it). It skips tb when the module is
// not in the cache.
func Dir(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		var out []byte
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", SDKModule)
		out, err = cmd.Output()
		dir = filepath.Join(strings.TrimSpace(string(out)), "wasm")
	})
	if err != nil || strings.TrimSpace(dir) == "wasm" {
		tb.Skipf("the Extism Go SDK is not in the module cache (go mod download %s): %v", SDKModule, err)
	}
	return dir
}

// Path returns the path of one of the SDK's plugins, e.g. "count_vowels.wasm".
func Path(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(Dir(tb), name)
}

// Read returns the bytes of one of the SDK's plugins.
func Read(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(Path(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
