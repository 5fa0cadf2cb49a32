package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundleCmd(t *testing.T) {
	dir := t.TempDir()
	ref, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ref.wasm"), ref, 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(manifest, []byte("revision: r7\nplugins:\n  - {name: ref, wasm: ref.wasm}\n  - {name: authz, wasm: builtin:authz}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ops, other := filepath.Join(dir, "ops"), filepath.Join(dir, "other")
	out := filepath.Join(dir, "b.tar.gz")
	must := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := cli(t, "", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		return stdout
	}
	if s := must("bundle", "keygen", ops); !strings.Contains(s, "ops: ") {
		t.Errorf("keygen: %q", s)
	}
	must("bundle", "keygen", other)
	if st, err := os.Stat(ops + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	if code, _, stderr := cli(t, "", "bundle", "keygen", ops); code != exitFailure || !strings.Contains(stderr, "exists") {
		t.Errorf("keygen over a key: %d %s", code, stderr)
	}
	must("bundle", "build", "-o", out, manifest)
	if code, _, stderr := cli(t, "", "bundle", "verify", "--key", ops+".pub", out); code != exitFailure || !strings.Contains(stderr, "not signed") {
		t.Errorf("verify unsigned: %d %s", code, stderr)
	}
	must("bundle", "sign", "--key", ops+".key", out)
	s := must("bundle", "verify", "--key", ops+".pub", out)
	if !strings.Contains(s, `signed by "ops", revision "r7"`) || !strings.Contains(s, "ref\tref.wasm") || !strings.Contains(s, "authz\tbuiltin:authz") {
		t.Errorf("verify: %q", s)
	}
	// The other key under the id ops: the signature does not verify.
	if code, _, stderr := cli(t, "", "bundle", "verify", "--key", "ops="+other+".pub", out); code != exitFailure || !strings.Contains(stderr, "bad signature") {
		t.Errorf("verify with another key: %d %s", code, stderr)
	}
	for _, c := range [][]string{
		{"bundle", "build", manifest},
		{"bundle", "sign", out},
		{"bundle", "verify", out},
		{"bundle", "build", "-o", out},
	} {
		if code, _, _ := cli(t, "", c...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", c, code, exitUsage)
		}
	}
}

// serve does not start on an unsigned bundle: exit 1, the last line naming the bundle and why.
func TestServeUnsignedBundle(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(manifest, []byte("plugins:\n  - {name: authz, wasm: builtin:authz}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "b.tar.gz")
	key := filepath.Join(dir, "ops")
	for _, args := range [][]string{{"bundle", "build", "-o", b, manifest}, {"bundle", "keygen", key}} {
		if code, _, stderr := cli(t, "", args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "wasmvisor.yaml")
	yaml := "listen: 127.0.0.1:0\ncache_dir: off\nbundles:\n  paths: [b.tar.gz]\n  keys: {ops: " + strings.TrimSpace(string(pub)) + "}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, "", "serve", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if last := lines[len(lines)-1]; code != exitFailure || !strings.Contains(last, "wasmvisor: bundle "+b+": bundle: not signed") {
		t.Fatalf("exit %d, last line %q", code, last)
	}
}
