package extism_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// TestDirGrantsAreConfined: an Extism plugin (the SDK's read_write.wasm, whose try_read
// reads the file named by its config key "path") with a read-only grant reads the granted
// file, a relative link inside the grant, and nothing outside it through symbolic links,
// absolute or relative, or "..". It opens its grant per instance and closes it with the
// instance.
func TestDirGrantsAreConfined(t *testing.T) {
	tmp := t.TempDir()
	grant, outside := filepath.Join(tmp, "grant"), filepath.Join(tmp, "outside")
	for _, d := range []string{grant, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("TOPSECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(grant, "test.txt"), []byte("hello world!"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"in":         "test.txt",
		"rel-out":    "../outside/secret.txt",
		"abs-out":    filepath.Join(outside, "secret.txt"),
		"absdir-out": outside,
	} {
		if err := os.Symlink(target, filepath.Join(grant, link)); err != nil {
			t.Fatal(err)
		}
	}
	wasm := extismtest.Read(t, "read_write.wasm")
	ctx := context.Background()
	m, err := extism.Compile(ctx, wasm, sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: grant, Guest: "/mnt"}}}}, cacheOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	for _, c := range []struct{ path, want string }{
		{"/mnt/test.txt", "hello world!"},
		{"/mnt/in", "hello world!"},
		{"/mnt/rel-out", ""},
		{"/mnt/abs-out", ""},
		{"/mnt/absdir-out/secret.txt", ""},
		{"/mnt/../outside/secret.txt", ""},
	} {
		i, err := m.Instantiate(ctx, map[string]string{"path": c.path})
		if err != nil {
			t.Fatal(err)
		}
		out, err := i.Call(ctx, "try_read", nil)
		switch {
		case strings.Contains(string(out), "TOPSECRET") || err != nil && strings.Contains(err.Error(), "TOPSECRET"):
			t.Errorf("read %q escaped the grant: %q, %v", c.path, out, err)
		case c.want == "" && err == nil:
			t.Errorf("read %q: %q; want a refusal", c.path, out)
		case c.want != "" && (err != nil || string(out) != c.want):
			t.Errorf("read %q: %q, %v; want %q", c.path, out, err, c.want)
		}
		if err := i.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
