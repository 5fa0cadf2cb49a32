package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundlesAndStateDir(t *testing.T) {
	pub := base64.StdEncoding.EncodeToString(make([]byte, ed25519.PublicKeySize))
	c, err := parse(t, "state_dir: state\nbundles:\n  paths: [b.tar.gz, /abs/dir]\n  keys: {ops: "+pub+"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.StateDir) || filepath.Base(c.StateDir) != "state" {
		t.Errorf("state_dir: %q", c.StateDir)
	}
	if len(c.Bundles.Paths) != 2 || !filepath.IsAbs(c.Bundles.Paths[0]) || c.Bundles.Paths[1] != "/abs/dir" ||
		len(c.Bundles.Keys["ops"]) != ed25519.PublicKeySize {
		t.Errorf("bundles: %+v", c.Bundles)
	}
	c, err = parse(t, "", "WASMVISOR_STATE_DIR=/var/lib/wasmvisor")
	if err != nil || c.StateDir != "/var/lib/wasmvisor" {
		t.Errorf("env: %v %q", err, c.StateDir)
	}
	for _, bad := range []struct{ yaml, key string }{
		{"bundles: {paths: [b.tar.gz]}", "bundles.keys"},
		{"bundles: {keys: {ops: AAAA}}", "bundles.keys.ops"},
		{"bundles: {keys: {'bad id': " + pub + "}}", "bundles.keys.bad id"},
		{"bundles: {paths: ['']}", "bundles.paths[0]"},
		{"bundles: {path: [x]}", "bundles.path"},
	} {
		_, err := parse(t, bad.yaml)
		var es Errors
		if !errors.As(err, &es) || !strings.Contains(err.Error(), bad.key+": ") {
			t.Errorf("%s: %v", bad.yaml, err)
		}
	}
}

func TestModules(t *testing.T) {
	in := Input{Data: []byte("plugins: [{name: a, wasm: a.wasm}, {name: b, wasm: missing.wasm}]"), Env: []string{},
		Modules: map[string][]byte{"a.wasm": []byte("x")}}
	_, err := Parse(in)
	if err == nil || !strings.Contains(err.Error(), `plugins[1](b).wasm: no module "missing.wasm" in the bundle`) {
		t.Fatalf("missing module: %v", err)
	}
	in.Data = []byte("state_dir: /x\nplugins: [{name: a, wasm: a.wasm}]")
	if _, err := Parse(in); err == nil {
		t.Fatal("a bundle's manifest with state_dir: no error")
	}
	in.Data = []byte("plugins: [{name: a, wasm: a.wasm}]")
	c, err := Parse(in)
	if err != nil || c.Plugins[0].Path != "a.wasm" {
		t.Fatalf("%v %+v", err, c)
	}
}
