package host_test

import (
	"slices"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// PluginInfo reports each plugin's format and the handlers a caller may name: the guest's
// declared list for the native ABI, the callable exports for Extism.
func TestPluginInfoFormatAndHandlers(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, host.WithFormats(extism.Format()))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "native", Wasm: reference, Instances: 2})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "vowels", Wasm: extismtest.Read(t, "count_vowels.wasm")})
	for _, tc := range []struct {
		name     string
		format   host.Format
		handlers []string
	}{
		{"native", host.FormatWasmvisor, []string{"echo", "config_get", "config_changes", "emit", "publish",
			"count", "gauge", "observe", "fail", "trap", "loop", "grow", "set", "get", "exit", "log", "stdout", "host_call"}},
		{"vowels", host.FormatExtism, []string{"count_vowels"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pi, err := h.Plugin(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if pi.Format != tc.format || !slices.Equal(pi.Handlers, tc.handlers) {
				t.Fatalf("format %q handlers %q, want %q %q", pi.Format, pi.Handlers, tc.format, tc.handlers)
			}
		})
	}

	// Plugins reports the same; the lists are copies.
	for _, pi := range h.Plugins() {
		if pi.Format == "" || len(pi.Handlers) == 0 {
			t.Fatalf("Plugins: %s: format %q handlers %q", pi.Name, pi.Format, pi.Handlers)
		}
		pi.Handlers[0] = "changed"
	}
	if pi, _ := h.Plugin("vowels"); pi.Handlers[0] != "count_vowels" {
		t.Fatalf("handlers shared with a caller: %q", pi.Handlers)
	}
	// After Replace, the new module's handlers.
	if err := h.Replace(ctxT(t), host.Plugin{Name: "native", Wasm: hostile, Instances: 2}); err != nil {
		t.Fatal(err)
	}
	pi, _ := h.Plugin("native")
	if want := []string{"echo", "trap", "loop", "trapon", "logloop"}; !slices.Equal(pi.Handlers, want) || pi.Format != host.FormatWasmvisor {
		t.Fatalf("after Replace: %q %q, want %q", pi.Format, pi.Handlers, want)
	}
}
