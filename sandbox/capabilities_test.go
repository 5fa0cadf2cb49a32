package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// grantTree lays out, under one temporary directory, a granted directory and a secret next to
// it, with symbolic links inside the grant pointing in and out, absolute and relative. It
// returns the grant.
//
//	outside/secret.txt       TOPSECRET
//	grant/policy.json        {"ok":true}
//	grant/sub/inner.txt      inner
//	grant/rel-in        ->   sub/inner.txt
//	grant/abs-in        ->   <grant>/sub/inner.txt
//	grant/rel-out       ->   ../outside/secret.txt
//	grant/abs-out       ->   <outside>/secret.txt
//	grant/reldir-out    ->   ../outside
//	grant/absdir-out    ->   <outside>
func grantTree(t testing.TB) (grant, outside string) {
	t.Helper()
	tmp := t.TempDir()
	grant, outside = filepath.Join(tmp, "grant"), filepath.Join(tmp, "outside")
	for _, d := range []string{outside, filepath.Join(grant, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		filepath.Join(outside, "secret.txt"):     "TOPSECRET",
		filepath.Join(grant, "policy.json"):      `{"ok":true}`,
		filepath.Join(grant, "sub", "inner.txt"): "inner",
	} {
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"rel-in":     "sub/inner.txt",
		"abs-in":     filepath.Join(grant, "sub", "inner.txt"),
		"rel-out":    "../outside/secret.txt",
		"abs-out":    filepath.Join(outside, "secret.txt"),
		"reldir-out": "../outside",
		"absdir-out": outside,
	} {
		if err := os.Symlink(target, filepath.Join(grant, link)); err != nil {
			t.Fatal(err)
		}
	}
	return grant, outside
}

// grantCases are paths relative to the mount, what a read answers ("" for a refusal).
func grantCases(outside string) []struct{ path, want string } {
	return []struct{ path, want string }{
		{"policy.json", `{"ok":true}`},
		{"sub/inner.txt", "inner"},
		{"sub/../policy.json", `{"ok":true}`},
		{"rel-in", "inner"}, // a relative link that stays inside works
		{"abs-in", ""},      // os.Root follows no absolute link, even one that points inside
		{"rel-out", ""},
		{"abs-out", ""},
		{"reldir-out/secret.txt", ""},
		{"absdir-out/secret.txt", ""},
		{"../outside/secret.txt", ""},
		{"sub/../../outside/secret.txt", ""},
		{"..", ""},
		{outside + "/secret.txt", ""}, // an absolute host path: the guest's paths are the mount's
	}
}

// TestDirGrantsAreConfined reads through a read-only directory grant with symbolic links
// inside it, "..", and absolute paths, from two guests: the Go caps plugin (whose runtime
// cleans paths and resolves them against its preopens) and caps_escape, which hands raw
// paths to WASI's path_open. Nothing outside the grant is ever read; a relative link inside
// it works; writes still fail.
func TestDirGrantsAreConfined(t *testing.T) {
	e := newEngine(t)
	grant, outside := grantTree(t)
	caps := sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: grant, Guest: "/data"}}}
	guests := []struct {
		name, path string
		guestPath  func(string) string
	}{
		{"go", capsPath, func(p string) string {
			if strings.HasPrefix(p, "/") {
				return p
			}
			return "/data/" + p
		}},
		{"wat", "../internal/faults/testdata/caps_escape.wasm", func(p string) string { return p }},
	}
	ctx := context.Background()
	for _, g := range guests {
		i := instantiate(t, compile(t, e, g.path, sandbox.Config{Capabilities: caps}), nil)
		for _, c := range grantCases(outside) {
			out, err := i.Call(ctx, "read", []byte(g.guestPath(c.path)))
			switch {
			case strings.Contains(string(out), "TOPSECRET") || err != nil && strings.Contains(err.Error(), "TOPSECRET"):
				t.Errorf("%s: read %q escaped the grant: %q, %v", g.name, c.path, out, err)
			case c.want == "" && !errors.Is(err, sandbox.ErrGuest):
				t.Errorf("%s: read %q: %q, %v; want a refusal (ErrGuest)", g.name, c.path, out, err)
			case c.want != "" && (err != nil || string(out) != c.want):
				t.Errorf("%s: read %q: %q, %v; want %q", g.name, c.path, out, err, c.want)
			}
		}
		if g.name == "go" {
			for _, p := range []string{"/data/new.txt", "/data/policy.json", "/data/rel-out"} {
				if _, err := i.Call(ctx, "write", []byte(p)); !errors.Is(err, sandbox.ErrGuest) {
					t.Errorf("write %s to a read-only grant: %v", p, err)
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(outside, "secret.txt")); err != nil || string(b) != "TOPSECRET" {
		t.Errorf("the secret was changed: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(grant, "policy.json")); err != nil || string(b) != `{"ok":true}` {
		t.Errorf("the granted file was changed: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(grant, "new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the guest created a file in a read-only grant: %v", err)
	}
}

// TestDirGrantOpenedPerInstance: each instance opens its grant when it starts, so a grant
// whose directory disappeared fails the next instance with a clear error, not the host.
func TestDirGrantOpenedPerInstance(t *testing.T) {
	e := newEngine(t)
	grant, _ := grantTree(t)
	m := compile(t, e, capsPath, sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: grant, Guest: "/data"}}}})
	i := instantiate(t, m, nil)
	if got := mustCall(t, i, "read", "/data/policy.json"); got != `{"ok":true}` {
		t.Fatalf("read = %q", got)
	}
	if err := os.RemoveAll(grant); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Instantiate(context.Background(), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an instance whose grant is gone: %v, want os.ErrNotExist", err)
	}
}
