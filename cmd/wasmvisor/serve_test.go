package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/server"
	"github.com/wasmvisor/wasmvisor/host"
)

// An invalid configuration stops serve before it starts: exit 1, one line naming the key.
func TestServeInvalidConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown key", "listen: 127.0.0.1:0\nplugins:\n  - {name: a, wasm: builtin:authz, instancs: 2}\n", "plugins[0].instancs: unknown key"},
		{"bad value", "plugins:\n  - {name: a, wasm: builtin:authz, failure_policy: open}\n", "plugins[0](a).failure_policy: want one of deny, allow, monitor"},
		{"no builtin", "plugins:\n  - {name: a, wasm: builtin:nope}\n", `no built-in plugin "nope"`},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := cli(t, "", "serve", "--config", path, "--listen", "127.0.0.1:0")
		if code != exitFailure || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line with %q", c.name, code, stderr, c.want)
		}
	}
	code, _, stderr := cli(t, "", "serve", "--config", filepath.Join(dir, "missing.yaml"))
	if code != exitFailure || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
	code, _, _ = cli(t, "", "serve", "extra")
	if code != exitUsage {
		t.Errorf("extra argument: exit %d, want %d", code, exitUsage)
	}
}

// An incomplete shutdown exits 5: it timed out, or instances leaked.
func TestExitCodeShutdown(t *testing.T) {
	t.Parallel()
	for _, err := range []error{fmt.Errorf("shutdown: %w", server.ErrShutdownTimeout), fmt.Errorf("shutdown: %w", host.ErrLeak)} {
		if code := exitCode(err); code != exitShutdown {
			t.Errorf("%v: exit %d, want %d", err, code, exitShutdown)
		}
	}
}
