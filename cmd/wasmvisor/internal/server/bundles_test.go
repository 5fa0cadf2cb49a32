package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/bundle"
)

// makeBundle builds a bundle of the reference plugin as name with config mode=mode, signed
// by priv under keyID (unsigned when priv is nil).
func makeBundle(t *testing.T, name, mode, keyID string, priv ed25519.PrivateKey) []byte {
	t.Helper()
	dir := t.TempDir()
	ref, err := os.ReadFile("../../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ref.wasm"), ref, 0o644); err != nil {
		t.Fatal(err)
	}
	m := fmt.Sprintf("revision: %q\nplugins:\n  - {name: %s, wasm: ref.wasm, config: {mode: %s}}\n", mode, name, mode)
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Build(filepath.Join(dir, "manifest.yaml"), bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if priv == nil {
		return b
	}
	if b, err = bundle.Sign(b, keyID, priv, bundle.Options{}); err != nil {
		t.Fatal(err)
	}
	return b
}

func genKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// mode calls the reference plugin's config_get for "mode".
func mode(t *testing.T, ts *testServer, plugin string) string {
	t.Helper()
	a := ts.do(t, "POST", "/v1/plugins/"+plugin+"/call/config_get", "", "", []byte("mode"))
	if a.status != 200 {
		t.Fatalf("%s: %d %s", plugin, a.status, a.body)
	}
	return string(a.body)
}

// A bundle is served; a replacement that is badly signed, unsigned or tampered is refused,
// counted and reported, and the last good bundle keeps serving; a good one replaces it.
func TestBundleRefusalKeepsLastGood(t *testing.T) {
	pub, priv := genKey(t)
	_, other := genKey(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policies.tar.gz")
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(makeBundle(t, "bref", "v1", "ops", priv))
	ts := openServer(t, fmt.Sprintf("plugins: [{name: ref, wasm: ref.wasm}]\nbundles: {paths: [%s], keys: {ops: %s}}\n",
		dir, base64.StdEncoding.EncodeToString(pub)), true)
	if got := mode(t, ts, "bref"); got != "v1" {
		t.Fatalf("bundle's config: %q", got)
	}
	if e := ts.entry("bref"); e == nil || e.source != SourceBundle {
		t.Fatalf("entry: %+v", e)
	}
	good := makeBundle(t, "bref", "v1", "ops", priv)
	truncated := good[:len(good)/2]
	for _, c := range []struct {
		name    string
		archive []byte
		reason  string
	}{
		{"signed by an unknown key", makeBundle(t, "bref", "v2", "ops", other), "signature"},
		{"unsigned", makeBundle(t, "bref", "v2", "", nil), "unsigned"},
		{"truncated", truncated, "archive"},
		{"a name of the configuration file", makeBundle(t, "ref", "v2", "ops", priv), "conflict"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := counterValue(t, ts.bundles.refused.WithLabelValues(c.reason))
			write(c.archive)
			err := ts.Reload(context.Background(), "test")
			if err == nil || !strings.Contains(err.Error(), file) {
				t.Fatalf("Reload: %v", err)
			}
			if got := counterValue(t, ts.bundles.refused.WithLabelValues(c.reason)); got != before+1 {
				t.Errorf("refused{%s}: %v, want %v", c.reason, got, before+1)
			}
			if st := ts.status.Load(); st.OK || !strings.Contains(st.Error, "bundle") {
				t.Errorf("status: %+v", st)
			}
			if got := mode(t, ts, "bref"); got != "v1" {
				t.Errorf("the last good bundle does not serve: %q", got)
			}
			var st struct {
				Bundles []bundleView `json:"bundles"`
			}
			a := ts.do(t, "GET", "/v1/status", "", "", nil)
			if err := json.Unmarshal(a.body, &st); err != nil || len(st.Bundles) != 1 {
				t.Fatalf("status: %v %s", err, a.body)
			}
			if v := st.Bundles[0]; v.File != file || v.Revision != "v1" || v.SignedBy != "ops" ||
				len(v.Plugins) != 1 || v.Plugins[0] != "bref" || !strings.Contains(v.Refused, file) {
				t.Errorf("status of the bundle: %+v", v)
			}
		})
	}
	if errors.Is(ts.Reload(context.Background(), "test"), bundle.ErrSignature) {
		t.Fatal("a conflict reported as a bad signature")
	}
	write(makeBundle(t, "bref", "v2", "ops", priv))
	if err := ts.Reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, ts, "bref"); got != "v2" {
		t.Fatalf("the new bundle: %q", got)
	}
	if v := ts.bundles.view(); len(v) != 1 || v[0].Revision != "v2" || v[0].Refused != "" {
		t.Fatalf("status after a good bundle: %+v", v)
	}
	// A bundle removed from the directory takes its plugins with it.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if ts.entry("bref") != nil {
		t.Fatal("bref still loaded")
	}
}

// A bad bundle at start stops the server from starting (there is no last good one).
func TestBundleRefusedAtStart(t *testing.T) {
	pub, _ := genKey(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b.tar.gz"), makeBundle(t, "bref", "v1", "", nil), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, fmt.Sprintf("bundles: {paths: [%s], keys: {ops: %s}}\n", dir, base64.StdEncoding.EncodeToString(pub)), false)
	if err := ts.Load(context.Background()); !errors.Is(err, bundle.ErrUnsigned) {
		t.Fatalf("Load: %v", err)
	}
}

// A plugin uploaded by PUT survives a restart of the server; DELETE removes it from the state
// directory; a PUT of a declared name is not persisted (the declaration wins at restart).
func TestPutSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	yaml := fmt.Sprintf("admin_token: %s\nstate_dir: %s\nplugins: [{name: ref, wasm: ref.wasm, config: {mode: file}}]\n", testToken, state)
	ref, err := os.ReadFile("../../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, yaml, true)
	if a := ts.do(t, "PUT", "/v1/plugins/up?config.mode=put&instances=2&failure_policy=allow", testToken, "application/wasm", ref); a.status != 201 {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	if a := ts.do(t, "PUT", "/v1/plugins/ref?config.mode=put", testToken, "application/wasm", ref); a.status != 200 {
		t.Fatalf("PUT over a declared name: %d %s", a.status, a.body)
	}
	if a := ts.do(t, "PUT", "/v1/plugins/up", testToken, "application/json", []byte(`{"config": {"mode": "put2"}, "failure_policy": "monitor", "failure_answer": {"allowed": true}}`)); a.status != 200 {
		t.Fatalf("PUT config: %d %s", a.status, a.body)
	}
	if got := mode(t, ts, "up"); got != "put2" {
		t.Fatalf("before the restart: %q", got)
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	ts = openServer(t, yaml, true)
	if got := mode(t, ts, "up"); got != "put2" {
		t.Fatalf("after the restart: %q", got)
	}
	e := ts.entry("up")
	if e == nil || e.source != "api" || e.spec.Instances != 2 || e.spec.FailurePolicy != "monitor" ||
		string(e.spec.FailureAnswer) != `{"allowed": true}` {
		t.Fatalf("entry after the restart: %+v", e)
	}
	if got := mode(t, ts, "ref"); got != "file" {
		t.Fatalf("the declared plugin after the restart: %q", got)
	}
	if a := ts.do(t, "DELETE", "/v1/plugins/up", testToken, "", nil); a.status != 204 {
		t.Fatalf("DELETE: %d %s", a.status, a.body)
	}
	for _, d := range []string{"plugins", "modules"} {
		if des, err := os.ReadDir(filepath.Join(state, d)); err != nil || len(des) != 0 {
			t.Fatalf("%s after DELETE: %v %v", d, des, err)
		}
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	ts = openServer(t, yaml, true)
	if ts.entry("up") != nil {
		t.Fatal("a deleted plugin came back")
	}
}

// A state directory whose record does not match its module stops the start, naming the file.
func TestStateCorruptRefused(t *testing.T) {
	state := t.TempDir()
	st := &stateStore{dir: state}
	ref, err := os.ReadFile("../../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, fmt.Sprintf("admin_token: %s\nstate_dir: %s\n", testToken, state), true)
	if a := ts.do(t, "PUT", "/v1/plugins/up", testToken, "application/wasm", ref); a.status != 201 {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mods, err := os.ReadDir(filepath.Join(state, "modules"))
	if err != nil || len(mods) != 1 {
		t.Fatalf("modules: %v %v", mods, err)
	}
	if err := os.WriteFile(filepath.Join(state, "modules", mods[0].Name()), []byte("\x00asm\x01\x00\x00\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.load(1 << 20); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "up.json") {
		t.Fatalf("load: %v", err)
	}
	ts = openServer(t, fmt.Sprintf("state_dir: %s\n", state), false)
	if err := ts.Load(context.Background()); !errors.Is(err, ErrState) {
		t.Fatalf("Load: %v", err)
	}
}

// Watch reloads when a bundle file changes: a badly signed replacement is refused, a good one
// applied. The test waits on the server's log entries, not on the clock.
func TestBundleWatched(t *testing.T) {
	pub, priv := genKey(t)
	_, other := genKey(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policies.tar.gz")
	if err := os.WriteFile(file, makeBundle(t, "bref", "v1", "ops", priv), 0o644); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan string, 16)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "reloaded" || strings.HasPrefix(e.Message, "reload failed") {
			reloads <- e.Message
		}
		return nil
	})))
	ts := openServerLog(t, fmt.Sprintf("reload: {interval: 5ms}\nbundles: {paths: [%s], keys: {ops: %s}}\n",
		file, base64.StdEncoding.EncodeToString(pub)), true, log)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- ts.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-watched; err != nil {
			t.Error(err)
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case m := <-reloads:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no reload within 10s")
		}
		return ""
	}
	// Replaced by a rename, as a deployment should: the watcher never sees half a file.
	replace := func(b []byte) {
		t.Helper()
		tmp := filepath.Join(t.TempDir(), "b")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	replace(makeBundle(t, "bref", "v22", "ops", other))
	if m := next(); !strings.HasPrefix(m, "reload failed") {
		t.Fatalf("a badly signed bundle: %q", m)
	}
	if got := mode(t, ts, "bref"); got != "v1" {
		t.Fatalf("the last good bundle does not serve: %q", got)
	}
	replace(makeBundle(t, "bref", "v333", "ops", priv))
	if m := next(); m != "reloaded" {
		t.Fatalf("a good bundle: %q", m)
	}
	if got := mode(t, ts, "bref"); got != "v333" {
		t.Fatalf("the new bundle: %q", got)
	}
}
