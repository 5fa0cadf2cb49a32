package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// A state directory's records are input like any other: each problem is an ErrState naming
// the file, within bounds, never a panic or a plugin loaded with values PUT would refuse.
func TestStateRecordsRefused(t *testing.T) {
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	sum := sha256.Sum256(wasm)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	good := `{"version":1,"name":"p","module":"` + digest + `","config":{"k":"v"},"instances":2,"call_timeout":"none","failure_policy":"allow","failure_answer":"{\"allowed\":true}","required":true}`
	for _, c := range []struct{ name, record, want string }{
		{"good", good, ""},
		{"not JSON", "{", "unexpected EOF"},
		{"unknown field", strings.Replace(good, `"required"`, `"dirs":[],"required"`, 1), "unknown field"},
		{"version", strings.Replace(good, `"version":1`, `"version":2`, 1), "version 2"},
		{"another name", strings.Replace(good, `"name":"p"`, `"name":"q"`, 1), `names plugin "q"`},
		{"instances", strings.Replace(good, `"instances":2`, `"instances":100000`, 1), "instances 100000"},
		{"memory", strings.Replace(good, `"instances":2`, `"instances":2,"memory_pages":70000`, 1), "memory_pages 70000"},
		{"policy", strings.Replace(good, `"allow"`, `"open"`, 1), `failure_policy "open"`},
		{"timeout", strings.Replace(good, `"none"`, `"-1s"`, 1), `call_timeout "-1s"`},
		{"module path", strings.Replace(good, digest, "sha256:../../etc/passwd", 1), "want sha256:HEX"},
		{"module missing", strings.Replace(good, digest, "sha256:"+strings.Repeat("0", 64), 1), "no such file"},
		{"failure answer under deny", strings.Replace(good, `"allow"`, `"deny","failure_answer":"{\"allowed\":true}"`, 1), "failure_answer"},
		{"empty key", strings.Replace(good, `"k":"v"`, `"":"v"`, 1), "empty config key"},
		{"huge record", `{"version":1,"name":"` + strings.Repeat("p", maxStateRecordBytes) + `"}`, "over"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &stateStore{dir: t.TempDir()}
			if err := writeAtomic(st.modulePath(digest), wasm); err != nil {
				t.Fatal(err)
			}
			if err := writeAtomic(st.recordPath("p"), []byte(c.record)); err != nil {
				t.Fatal(err)
			}
			ps, err := st.load(1 << 20)
			if c.want == "" {
				if err != nil || len(ps) != 1 {
					t.Fatalf("load: %v %v", ps, err)
				}
				p := ps[0].plugin
				if p.Name != "p" || p.Instances != 2 || p.CallTimeout != -1 || p.FailurePolicy != config.FailAllow ||
					!p.Required || p.Config["k"] != "v" || string(p.FailureAnswer) != `{"allowed":true}` || string(ps[0].wasm) != string(wasm) {
					t.Fatalf("plugin: %+v", p)
				}
				return
			}
			if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "p.json") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load: %v; want ErrState with %q", err, c.want)
			}
		})
	}
	// A module over the bound is refused without being read whole.
	st := &stateStore{dir: t.TempDir()}
	if err := writeAtomic(st.modulePath(digest), wasm); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(st.recordPath("p"), []byte(good)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.load(4); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "over 4 bytes") {
		t.Fatalf("a module over the bound: %v", err)
	}
	// A temporary file left by a crash is ignored.
	if err := os.WriteFile(filepath.Join(st.dir, "plugins", ".tmp-123"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ps, err := st.load(1 << 20); err != nil || len(ps) != 1 {
		t.Fatalf("with a temporary file: %v %v", ps, err)
	}
}
