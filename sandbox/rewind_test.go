package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestRewindMarker: in every language, what a call leaves in an instance is gone after
// Rewind, the instance serves on, and a checkpoint taken later is what the next Rewind returns
// to.
func TestRewindMarker(t *testing.T) {
	e := newEngine(t)
	for _, lang := range snapshotLanguages {
		t.Run(lang.name, func(t *testing.T) {
			i := instantiate(t, compile(t, e, lang.path, sandbox.Config{}), nil)
			if err := i.Rewind(); !isRewindError(err) {
				t.Fatalf("Rewind without a checkpoint: %v", err)
			}
			if err := i.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			pages := i.MemoryPages()
			for n := range 3 {
				if got := mustCall(t, i, "get", ""); got != "" {
					t.Fatalf("round %d: the rewound instance shows %q", n, got)
				}
				mustCall(t, i, "set", "marker")
				if got := mustCall(t, i, "get", ""); got != "marker" {
					t.Fatalf("round %d: get after set: %q", n, got)
				}
				if err := i.Rewind(); err != nil {
					t.Fatalf("round %d: %v", n, err)
				}
			}
			mustCall(t, i, "set", "kept")
			if err := i.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			mustCall(t, i, "set", "gone")
			if err := i.Rewind(); err != nil {
				t.Fatal(err)
			}
			if got := mustCall(t, i, "get", ""); got != "kept" {
				t.Fatalf("after the second checkpoint: %q", got)
			}
			if i.MemoryPages() != pages {
				t.Fatalf("pages %d, then %d", pages, i.MemoryPages())
			}
		})
	}
}

// TestRewindClockAndRandom: the fake clocks and the deterministic random source go back too,
// so a rewound instance answers as it did the first time; without Rewind the answers move on.
func TestRewindClockAndRandom(t *testing.T) {
	e := newEngine(t)
	i := instantiate(t, compile(t, e, capsPath, sandbox.Config{}), nil)
	if err := i.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	now, random := mustCall(t, i, "now", ""), mustCall(t, i, "random", "")
	if now2, random2 := mustCall(t, i, "now", ""), mustCall(t, i, "random", ""); now2 == now || random2 == random {
		t.Fatalf("the clock or the random source did not move on: %s %s, then %s %s", now, random, now2, random2)
	}
	if err := i.Rewind(); err != nil {
		t.Fatal(err)
	}
	if now2, random2 := mustCall(t, i, "now", ""), mustCall(t, i, "random", ""); now2 != now || random2 != random {
		t.Fatalf("after Rewind: %s %s, the first time %s %s", now2, random2, now, random)
	}
}

// TestRewindRefused: what Checkpoint cannot record is refused with a *RewindError, and an
// instance whose memory grew since its checkpoint is refused by Rewind and serves on as it is.
func TestRewindRefused(t *testing.T) {
	e := newEngine(t)
	for _, c := range []struct {
		name, path string
		cfg        sandbox.Config
	}{
		{"table", "testdata/snaptable.wasm", sandbox.Config{}},
		{"dirs", capsPath, sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: t.TempDir(), Guest: "/data"}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := instantiate(t, compile(t, e, c.path, c.cfg), nil)
			err := i.Checkpoint()
			if !isRewindError(err) {
				t.Fatalf("Checkpoint: %v", err)
			}
			t.Log(err)
		})
	}
	t.Run("grown", func(t *testing.T) {
		i := instantiate(t, compile(t, e, referencePath, sandbox.Config{}), nil)
		if err := i.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		mustCall(t, i, "set", "marker")
		big := bytes.Repeat([]byte{'x'}, 1<<20) // more than the input buffer: the guest grows its memory
		if out, err := i.Call(context.Background(), "echo", big); err != nil || !bytes.Equal(out, big) {
			t.Fatalf("echo: %v", err)
		}
		err := i.Rewind()
		if !isRewindError(err) {
			t.Fatalf("Rewind: %v", err)
		}
		t.Log(err)
		if got := mustCall(t, i, "get", ""); got != "marker" {
			t.Fatalf("a refused Rewind changed the instance: %q", got)
		}
	})
	t.Run("ended", func(t *testing.T) {
		i := instantiate(t, compile(t, e, referencePath, sandbox.Config{}), nil)
		if err := i.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if _, err := i.Call(context.Background(), "trap", nil); err == nil {
			t.Fatal("no trap")
		}
		if err := i.Rewind(); !isRewindError(err) {
			t.Fatalf("Rewind of an ended instance: %v", err)
		}
	})
}

func isRewindError(err error) bool {
	var re *sandbox.RewindError
	return errors.As(err, &re)
}
