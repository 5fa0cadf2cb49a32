package sandbox

import (
	"os"
	"testing"
)

// A module gets its own streams, random source, clocks and sleep only where its imports can
// reach them, and an instance of a module that can reach none of them gets the module's
// base config as it is: no copy of it.
func TestInstanceConfigHasOnlyWhatTheImportsReach(t *testing.T) {
	for _, c := range []struct {
		path string
		want wasiUse
	}{
		{"../plugins/reference/reference.wasm", wasiStreams}, // fd_write, proc_exit
		{"../plugins/conformance/go/conformance.wasm", wasiAll},
		{"testdata/mini.wasm", 0},
	} {
		wasm, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := Inspect(wasm)
		if err != nil {
			t.Fatal(err)
		}
		if got := wasiUseOf(info.Imports); got != c.want {
			t.Errorf("%s: use %04b, want %04b (imports %v)", c.path, got, c.want, info.Imports)
		}
	}
	for _, c := range []struct {
		im   Symbol
		want wasiUse
	}{
		{Symbol{Module: "wasi_snapshot_preview1", Name: "fd_write"}, wasiStreams},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "fd_pwrite"}, wasiStreams},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "sock_send"}, wasiStreams},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "random_get"}, wasiRandom},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "clock_time_get"}, wasiClocks},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "clock_res_get"}, wasiClocks},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "poll_oneoff"}, wasiClocks | wasiSleep},
		{Symbol{Module: "wasi_snapshot_preview1", Name: "proc_exit"}, 0},
		{Symbol{Module: "wasmvisor", Name: "fd_write"}, 0},
	} {
		if got := wasiUseOf([]Symbol{c.im}); got != c.want {
			t.Errorf("%s.%s: use %04b, want %04b", c.im.Module, c.im.Name, got, c.want)
		}
	}

	for _, clock := range []Clock{ClockDeterministic, ClockReal} {
		caps := Capabilities{Clock: clock}
		base := caps.baseConfig(0)
		if mc := caps.withInstance(base, 0, os.Stdout, os.Stderr, nil, func(int64) {}, nil, (*instanceIO)(nil)); mc != base {
			t.Errorf("clock %d: an instance that reaches nothing got a copy of the base config", clock)
		}
		if mc := caps.withInstance(base, wasiAll, os.Stdout, os.Stderr, nil, func(int64) {}, nil, (*instanceIO)(nil)); mc == base {
			t.Errorf("clock %d: an instance that reaches everything got the base config", clock)
		}
	}
}
