// Package extismtest finds the real Extism plugins that ship with the Extism Go SDK's module
// (its wasm/ folder: Rust, C, TinyGo, Haskell and Go plugins built by the Extism project), so
// that tests run them without copying them into this repository.
package extismtest

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// Dir returns the SDK's wasm folder in the module cache, for the version this module
// requires. `go mod download` fetches the module if the cache lacks it (building this
// module's extism package needs it anyway). It fails tb, never skips it, when the folder
// cannot be had: a suite that skips in CI proves nothing.
func Dir(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		var out []byte
		cmd := exec.Command("go", "mod", "download", "-json", SDKModule)
		out, err = cmd.Output()
		if err != nil {
			return
		}
		var m struct{ Dir, Error string }
		if err = json.Unmarshal(out, &m); err == nil && m.Error != "" {
			err = errors.New(m.Error)
		}
		dir = filepath.Join(m.Dir, "wasm")
		if err == nil {
			_, err = os.Stat(filepath.Join(dir, "count_vowels.wasm"))
		}
	})
	if err != nil {
		tb.Fatalf("extismtest: the Extism Go SDK's sample plugins (go mod download %s): %v", SDKModule, err)
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
