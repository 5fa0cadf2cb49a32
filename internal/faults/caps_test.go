package faults_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// capsName is caps_escape.wat, granted one directory read-only.
const capsName = "escape"

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestCapsGrantIsConfined: a guest with a read-only directory grant asks WASI's path_open,
// with raw paths, for a secret next to the grant: through symbolic links inside it (absolute
// and relative, to the file and to its directory), through "..", and by its host path. Every
// attempt is refused (ErrGuest, the guest's own error status), nothing is written, the granted
// files stay readable, the healthy plugin keeps answering, and each successor of the crashing
// guest is as confined as the first and leaves no file descriptor behind.
func TestCapsGrantIsConfined(t *testing.T) {
	tmp := t.TempDir()
	grant, outside := filepath.Join(tmp, "grant"), filepath.Join(tmp, "outside")
	for _, d := range []string{grant, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		filepath.Join(outside, "secret.txt"): "TOPSECRET",
		filepath.Join(grant, "policy.json"):  `{"ok":true}`,
	} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"in":         "policy.json",
		"rel-out":    "../outside/secret.txt",
		"abs-out":    filepath.Join(outside, "secret.txt"),
		"reldir-out": "../outside",
		"absdir-out": outside,
	} {
		if err := os.Symlink(target, filepath.Join(grant, link)); err != nil {
			t.Fatal(err)
		}
	}
	escapes := []string{
		"rel-out", "abs-out", "reldir-out/secret.txt", "absdir-out/secret.txt",
		"../outside/secret.txt", "./../outside/secret.txt", "in/../../outside/secret.txt",
		outside + "/secret.txt", "/../outside/secret.txt",
	}

	h := newHost(t, crashy()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: capsName, Wasm: hostile(t, "caps_escape"),
		Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: grant, Guest: "/data"}}}})
	confined := func() {
		t.Helper()
		for _, p := range escapes {
			out, err := h.Call(ctxT(t), capsName, "read", []byte(p))
			if strings.Contains(string(out), "TOPSECRET") || err != nil && strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("read %q escaped the grant: %q, %v", p, out, err)
			}
			if !errors.Is(err, sandbox.ErrGuest) {
				t.Fatalf("read %q: %q, %v; want a refusal (ErrGuest)", p, out, err)
			}
		}
		for _, p := range []string{"policy.json", "in"} {
			if out, err := h.Call(ctxT(t), capsName, "read", []byte(p)); err != nil || string(out) != `{"ok":true}` {
				t.Fatalf("read %q: %q, %v", p, out, err)
			}
		}
	}
	confined()
	fds := openFDs(t)
	withinMemory(t, 16<<20, func() {
		whileHealthy(t, h, func() {
			for range 20 {
				if _, err := h.Call(ctxT(t), capsName, "trap", nil); !errors.Is(err, sandbox.ErrTrap) {
					t.Fatalf("trap: %v, want ErrTrap", err)
				}
				confined() // the successor
			}
		})
	})
	if n := openFDs(t); n > fds+5 { // slack for descriptors the Go runtime opens lazily; a leak is one per instance
		t.Fatalf("%d file descriptors open after 20 successors, %d before", n, fds)
	}
	checkHealthy(t, h)
	if b, err := os.ReadFile(filepath.Join(outside, "secret.txt")); err != nil || string(b) != "TOPSECRET" {
		t.Fatalf("the secret was changed: %q, %v", b, err)
	}
}
