package sandbox_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// snapshotLanguages are the plugins with the marker handlers (set, get), one per guest
// language.
var snapshotLanguages = []struct{ name, path string }{
	{"wat", referencePath},
	{"go", goPluginPath},
	{"rust", "../plugins/conformance/rust/conformance.wasm"},
	{"c", "../plugins/conformance/c/conformance.wasm"},
	{"assemblyscript", "../plugins/conformance/assemblyscript/conformance.wasm"},
}

// TestSnapshotMarker: two instances restored from one snapshot share nothing afterwards, and
// an instance made from a recycled memory does not see what the last one wrote.
func TestSnapshotMarker(t *testing.T) {
	e := newEngine(t, sandbox.WithMappedImages()) // the small images too, to test the mapping
	for _, lang := range snapshotLanguages {
		t.Run(lang.name, func(t *testing.T) {
			m := compile(t, e, lang.path, sandbox.Config{})
			if on, why := m.Snapshots(); !on {
				t.Fatalf("no snapshots: %s", why)
			}
			a := instantiate(t, m, nil)
			b := instantiate(t, m, nil)
			t.Logf("the snapshot: %d pages", a.MemoryPages())
			if sandbox.ReservesMemory && !sandbox.MapsSnapshot(a) {
				t.Error("the instance copied the snapshot instead of mapping it")
			}
			mustCall(t, a, "set", "marker-a")
			if got := mustCall(t, b, "get", ""); got != "" {
				t.Fatalf("b sees %q", got)
			}
			if got := mustCall(t, a, "get", ""); got != "marker-a" {
				t.Fatalf("a sees %q", got)
			}
			for range 3 { // through the pool: each new instance gets a recycled memory
				if err := a.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				a = instantiate(t, m, nil)
				if got := mustCall(t, a, "get", ""); got != "" {
					t.Fatalf("a recycled memory shows %q", got)
				}
				mustCall(t, a, "set", "marker-again")
			}
			if got := mustCall(t, b, "get", ""); got != "" {
				t.Fatalf("b sees %q at the end", got)
			}
		})
	}
}

// TestSnapshotPerModule: two modules of the same bytes with different environments, whose
// guest reads the environment at init, each see their own: a snapshot never crosses modules.
func TestSnapshotPerModule(t *testing.T) {
	e := newEngine(t)
	env := func(v string) sandbox.Config {
		return sandbox.Config{Capabilities: sandbox.Capabilities{Env: map[string]string{"WHO": v}}}
	}
	ma := compile(t, e, "testdata/snapenv.wasm", env("a"))
	mb := compile(t, e, "testdata/snapenv.wasm", env("b"))
	for range 3 {
		for _, c := range []struct {
			m    *sandbox.Module
			want string
		}{{ma, "WHO=a\x00"}, {mb, "WHO=b\x00"}} {
			i := instantiate(t, c.m, nil)
			if got := mustCall(t, i, "env", ""); got != c.want {
				t.Fatalf("env %q, want %q", got, c.want)
			}
			if err := i.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSnapshotRefused: a module whose code writes a table is not snapshottable and runs the
// normal way; so does any module with Config.NoSnapshot or on an engine without snapshots.
func TestSnapshotRefused(t *testing.T) {
	e := newEngine(t)
	off := newEngine(t, sandbox.WithSnapshots(false))
	for _, c := range []struct {
		name string
		e    *sandbox.Engine
		path string
		cfg  sandbox.Config
		why  string
	}{
		{"table", e, "testdata/snaptable.wasm", sandbox.Config{}, "table.set"},
		{"config", e, "testdata/snapenv.wasm", sandbox.Config{NoSnapshot: true}, "Config.NoSnapshot"},
		{"engine", off, "testdata/snapenv.wasm", sandbox.Config{}, "WithSnapshots"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Capabilities.Env = map[string]string{"K": "v"}
			m := compile(t, c.e, c.path, c.cfg)
			if on, why := m.Snapshots(); on || !strings.Contains(why, c.why) {
				t.Fatalf("Snapshots() = %v, %q; want off, %q", on, why, c.why)
			}
			for range 2 {
				i := instantiate(t, m, nil)
				if sandbox.MapsSnapshot(i) {
					t.Fatal("a snapshot is mapped")
				}
				if got := mustCall(t, i, "env", ""); got != "K=v\x00" {
					t.Fatalf("env %q", got)
				}
			}
		})
	}
}

// TestSnapshotRunsInitOnce: with snapshots the start sequence runs once per module (its log
// line is written once, not replayed), without them once per instance.
func TestSnapshotRunsInitOnce(t *testing.T) {
	for _, snaps := range []bool{true, false} {
		core, logs := observer.New(zap.DebugLevel)
		e := newEngine(t, sandbox.WithLogger(zap.New(core)), sandbox.WithSnapshots(snaps))
		m := compile(t, e, "testdata/snapenv.wasm", sandbox.Config{})
		for range 4 {
			i := instantiate(t, m, nil)
			mustCall(t, i, "env", "")
			if err := i.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		want := 4
		if snaps {
			want = 1
		}
		if n := logs.FilterMessage("guest log").FilterField(zap.String("message", "init")).Len(); n != want {
			t.Errorf("snapshots %v: the start sequence ran %d times, want %d", snaps, n, want)
		}
	}
}
