package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const refWasm = "../../../../plugins/reference/reference.wasm"

// source writes a source manifest and the reference module beside it.
func sourceDir(t testing.TB, manifest string) string {
	t.Helper()
	dir := t.TempDir()
	ref, err := os.ReadFile(refWasm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ref.wasm"), ref, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(p, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const manifestYAML = `
revision: "r1"
plugins:
  - name: ref
    wasm: ref.wasm
    config: {mode: strict}
    limits: {memory_pages: 32, call_timeout: 50ms}
    failure_policy: allow
  - name: ref2
    wasm: ref.wasm
`

func keyPair(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func signed(t testing.TB, id string, priv ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := Build(sourceDir(t, manifestYAML), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Sign(b, id, priv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	pub, priv := keyPair(t)
	src := sourceDir(t, manifestYAML)
	a, err := Build(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(src, Options{})
	if err != nil || !bytes.Equal(a, again) {
		t.Fatalf("Build is not reproducible: %v", err)
	}
	s, err := Sign(a, "ops", priv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Read(bytes.NewReader(s), Options{Keys: map[string]ed25519.PublicKey{"ops": pub}})
	if err != nil {
		t.Fatal(err)
	}
	if b.SignedBy != "ops" || b.Revision != "r1" || len(b.Plugins) != 2 || !strings.HasPrefix(b.Digest, "sha256:") {
		t.Fatalf("bundle: %+v", b)
	}
	p := b.Plugins[0]
	if p.Name != "ref" || p.Path != "ref.wasm" || p.Config["mode"] != "strict" || p.MemoryPages != 32 ||
		p.FailurePolicy != "allow" || b.Plugins[1].FailurePolicy != "deny" {
		t.Fatalf("plugin: %+v", p)
	}
	ref, _ := os.ReadFile(refWasm)
	if m, err := b.Module(p, nil); err != nil || !bytes.Equal(m, ref) {
		t.Fatalf("Module: %v", err)
	}
	// A second signer keeps the first; re-signing by the same id replaces it.
	pub2, priv2 := keyPair(t)
	s2, err := Sign(s, "ci", priv2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err = Sign(s2, "ci", priv2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for id, k := range map[string]ed25519.PublicKey{"ops": pub, "ci": pub2} {
		b, err := Read(bytes.NewReader(s2), Options{Keys: map[string]ed25519.PublicKey{id: k}})
		if err != nil || b.SignedBy != id || len(b.Signatures) != 2 {
			t.Fatalf("%s: %v %+v", id, err, b)
		}
	}
}

// entry is one tar entry of a hand-made archive.
type entry struct {
	name string
	body []byte
	typ  byte
	link string
}

func archive(t testing.TB, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: typ, Name: e.name, Linkname: e.link, Size: int64(len(e.body)), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// entries reads an archive back into entries, in order.
func entries(t testing.TB, a []byte) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var es []entry
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(tr)
		es = append(es, entry{name: h.Name, body: b.Bytes()})
	}
	return es
}

func TestRefused(t *testing.T) {
	pub, priv := keyPair(t)
	otherPub, otherPriv := keyPair(t)
	keys := map[string]ed25519.PublicKey{"ops": pub}
	good := signed(t, "ops", priv)
	es := entries(t, good)
	with := func(name string, f func([]byte) []byte) []byte {
		var out []entry
		for _, e := range es {
			if e.name == name {
				if e.body = f(bytes.Clone(e.body)); e.body == nil {
					continue
				}
			}
			out = append(out, e)
		}
		return archive(t, out...)
	}
	flip := func(b []byte) []byte { b[len(b)/2] ^= 1; return b }
	unsigned, err := Build(sourceDir(t, manifestYAML), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		archive []byte
		keys    map[string]ed25519.PublicKey
		want    error
	}{
		{"tampered module", with("ref.wasm", flip), keys, ErrDigest},
		{"tampered manifest", with(ManifestName, func(b []byte) []byte {
			return bytes.Replace(b, []byte("strict"), []byte("loose!"), 1)
		}), keys, ErrSignature},
		{"tampered signature", with(SignaturesName, func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"signature": "`)) + len(`"signature": "`)
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return b
		}), keys, ErrSignature},
		{"unsigned", unsigned, keys, ErrUnsigned},
		{"signatures removed", with(SignaturesName, func([]byte) []byte { return nil }), keys, ErrUnsigned},
		{"unknown key", signed(t, "other", otherPriv), keys, ErrSignature},
		{"right id, wrong key", good, map[string]ed25519.PublicKey{"ops": otherPub}, ErrSignature},
		{"module missing", with("ref.wasm", func([]byte) []byte { return nil }), keys, ErrDigest},
		{"signatures not JSON", with(SignaturesName, func([]byte) []byte { return []byte("{") }), keys, ErrSignature},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.archive), Options{Keys: c.keys})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if Reason(err) == "read" {
				t.Fatalf("Reason(%v) = read", err)
			}
		})
	}
}

func TestHostileArchives(t *testing.T) {
	m := []byte("plugins: []\n")
	small := Limits{EntryBytes: 16, Entries: 3, TotalBytes: 1 << 20, ArchiveBytes: 1 << 20}
	gz := archive(t, entry{name: ManifestName, body: m})
	for _, c := range []struct {
		name    string
		archive []byte
		limits  Limits
		want    error
	}{
		{"traversal", archive(t, entry{name: ManifestName, body: m}, entry{name: "../evil.wasm", body: []byte("x")}), Limits{}, ErrArchive},
		{"traversal inside", archive(t, entry{name: ManifestName, body: m}, entry{name: "a/../../evil", body: []byte("x")}), Limits{}, ErrArchive},
		{"absolute", archive(t, entry{name: ManifestName, body: m}, entry{name: "/etc/evil", body: []byte("x")}), Limits{}, ErrArchive},
		{"symlink", archive(t, entry{name: ManifestName, body: m}, entry{name: "x.wasm", typ: tar.TypeSymlink, link: "/etc/passwd"}), Limits{}, ErrArchive},
		{"hard link", archive(t, entry{name: ManifestName, body: m}, entry{name: "x.wasm", typ: tar.TypeLink, link: ManifestName}), Limits{}, ErrArchive},
		{"huge entry", archive(t, entry{name: ManifestName, body: m}, entry{name: "x.wasm", body: make([]byte, 17)}), small, ErrArchive},
		{"huge manifest", archive(t, entry{name: ManifestName, body: make([]byte, MaxManifestBytes+1)}), Limits{}, ErrArchive},
		{"too many entries", archive(t, entry{name: ManifestName, body: m}, entry{name: "a"}, entry{name: "b"}, entry{name: "c"}), small, ErrArchive},
		{"too much in all", archive(t, entry{name: ManifestName, body: m}, entry{name: "a", body: make([]byte, 16)}),
			Limits{TotalBytes: 20}, ErrArchive},
		{"archive too big", gz, Limits{ArchiveBytes: int64(len(gz) - 1)}, ErrArchive},
		{"duplicate", archive(t, entry{name: ManifestName, body: m}, entry{name: ManifestName, body: m}), Limits{}, ErrArchive},
		{"not gzip", []byte("PK\x03\x04 not a tar.gz"), Limits{}, ErrArchive},
		{"truncated gzip", gz[:len(gz)/2], Limits{}, ErrArchive},
		{"gzip of garbage", func() []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(bytes.Repeat([]byte{0xff}, 1024))
			_ = zw.Close()
			return b.Bytes()
		}(), Limits{}, ErrArchive},
		{"no manifest", archive(t, entry{name: "a", body: []byte("x")}), Limits{}, ErrManifest},
		{"file not in manifest", archive(t, entry{name: ManifestName, body: m}, entry{name: "a.wasm", body: []byte("x")}), Limits{}, ErrArchive},
		{"manifest not YAML", archive(t, entry{name: ManifestName, body: []byte("plugins: [")}), Limits{}, ErrManifest},
		{"manifest unknown key", archive(t, entry{name: ManifestName, body: []byte("plugin: []\n")}), Limits{}, ErrManifest},
		{"manifest grants a directory", archive(t, entry{name: ManifestName, body: []byte(
			"modules: {a.wasm: " + digest([]byte("x")) + "}\nplugins: [{name: a, wasm: a.wasm, capabilities: {dirs: [{host: /, guest: /h}]}}]\n")},
			entry{name: "a.wasm", body: []byte("x")}), Limits{}, ErrManifest},
		{"manifest names a file it lacks", archive(t, entry{name: ManifestName, body: []byte(
			"plugins: [{name: a, wasm: a.wasm}]\n")}), Limits{}, ErrManifest},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.archive), Options{Limits: c.limits})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	pub, priv := keyPair(t)
	if k, err := DecodePublicKey(EncodeKey(pub)); err != nil || !k.Equal(pub) {
		t.Fatalf("public: %v", err)
	}
	if k, err := DecodePrivateKey(EncodeKey(priv.Seed())); err != nil || !k.Equal(priv) {
		t.Fatalf("private: %v", err)
	}
	for _, b := range []string{"", "not base64!", "AAAA"} {
		if _, err := DecodePublicKey([]byte(b)); !errors.Is(err, ErrKey) {
			t.Errorf("public %q: %v", b, err)
		}
		if _, err := DecodePrivateKey([]byte(b)); !errors.Is(err, ErrKey) {
			t.Errorf("private %q: %v", b, err)
		}
	}
	if _, err := Sign(signed(t, "ops", priv), "a b", priv, Options{}); !errors.Is(err, ErrKey) {
		t.Errorf("key id with a space: %v", err)
	}
}

// FuzzRead: whatever the bytes, Read returns a bundle or one of its errors, within its
// bounds, and never panics.
func FuzzRead(f *testing.F) {
	pub, priv := keyPair(f)
	f.Add(signed(f, "ops", priv))
	f.Add(archive(f, entry{name: ManifestName, body: []byte("plugins: []\n")}))
	f.Add(archive(f, entry{name: ManifestName, body: []byte("x")}, entry{name: "../x", body: []byte("y")}))
	f.Add([]byte{0x1f, 0x8b})
	keys := map[string]ed25519.PublicKey{"ops": pub}
	f.Fuzz(func(t *testing.T, b []byte) {
		l := Limits{ArchiveBytes: 1 << 20, TotalBytes: 1 << 20, EntryBytes: 1 << 16, Entries: 16}
		for _, k := range []map[string]ed25519.PublicKey{nil, keys} {
			bd, err := Read(bytes.NewReader(b), Options{Keys: k, Limits: l})
			if err != nil {
				if Reason(err) == "read" {
					t.Fatalf("untyped error: %v", err)
				}
				continue
			}
			if k != nil && bd.SignedBy != "ops" {
				t.Fatalf("verified without a signer: %+v", bd)
			}
		}
	})
}
