package host_test

import (
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// TestPluginNoSnapshot: Plugin.NoSnapshot reaches the plugin's module; without it the
// plugin's instances start from a snapshot, and both ways serve the same calls.
func TestPluginNoSnapshot(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	ctx := ctxT(t)
	for _, c := range []struct {
		name string
		off  bool
	}{{"snap", false}, {"nosnap", true}} {
		if err := h.Load(ctx, host.Plugin{Name: c.name, Wasm: reference, NoSnapshot: c.off, Instances: 2}); err != nil {
			t.Fatal(err)
		}
		pi, err := h.Plugin(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if pi.Snapshot == c.off || c.off && !strings.Contains(pi.SnapshotOff, "NoSnapshot") || !c.off && pi.SnapshotOff != "" {
			t.Fatalf("%s: PluginInfo.Snapshot %v, SnapshotOff %q", c.name, pi.Snapshot, pi.SnapshotOff)
		}
		if got := call(t, h, c.name, "echo", "hi"); got != "hi" {
			t.Fatalf("%s: echo = %q", c.name, got)
		}
	}
}
