// Package plugins embeds the built-in policy plugins that wasmvisor serves by default: the
// compiled .wasm of each example policy in this directory (see each one's README.md).
//
// The .wasm files are built reproducibly from their sources (`make plugins-go`) and committed,
// so this package compiles with only Go installed.
package plugins

import (
	_ "embed"
	"sort"
)

//go:embed authz/authz.wasm
var authzWasm []byte

//go:embed ratelimit/ratelimit.wasm
var ratelimitWasm []byte

//go:embed validate/validate.wasm
var validateWasm []byte

// builtins maps a built-in policy's name to its module bytes.
var builtins = map[string][]byte{
	"authz":     authzWasm,
	"ratelimit": ratelimitWasm,
	"validate":  validateWasm,
}

// Builtin returns the module bytes of the built-in policy plugin name ("authz", "validate",
// "ratelimit"), or false if there is none by that name. The slice is shared: callers must not
// modify it.
func Builtin(name string) ([]byte, bool) {
	b, ok := builtins[name]
	return b, ok
}

// Builtins returns the names of the built-in policy plugins, sorted.
func Builtins() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
