package host

import (
	"context"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Format is the ABI a plugin speaks, as reported in PluginInfo.Format.
type Format string

// The names of the formats wasmvisor ships (a format's sandbox.Format.Name).
const (
	// FormatWasmvisor is the native ABI (package sandbox, the wasmvisor SDKs).
	FormatWasmvisor Format = sandbox.NativeFormat
	// FormatExtism is an Extism-PDK plugin (package sandbox/extism, registered with
	// WithFormats).
	FormatExtism Format = "extism"
)

// compile compiles a plugin's bytes with the format that claims them (see WithFormats).
func (h *Host) compile(ctx context.Context, wasm []byte, cfg sandbox.Config) (sandbox.Code, error) {
	return h.engine.Load(ctx, wasm, cfg, h.formats...)
}
