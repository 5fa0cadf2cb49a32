package opa_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
)

func readBundleFile(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "plugins", "rego", "example", "bundle.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBundleFromOPA reads the bundle opa build wrote (plugins/rego/build.sh): its module is
// the corpus's policy.wasm, built with the same entrypoints, and its data the data.json
// given to opa build.
func TestBundleFromOPA(t *testing.T) {
	b := readBundleFile(t)
	if !opa.IsBundle(b) || opa.IsPolicy(b) {
		t.Fatal("the bundle is not told from a module")
	}
	wasm, data, err := opa.ReadBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wasm, policy(t, "example")) {
		t.Error("/policy.wasm differs from plugins/rego/example/policy.wasm")
	}
	if want := `{"grants":{"r":["read"],"w":["write"]},"roles":{"ann":["r"],"bob":["w"]}}`; string(data) != want {
		t.Errorf("data %s, want %s", data, want)
	}
	ctx := context.Background()
	m, err := opa.Compile(ctx, b, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	if m.Digest() != sandbox.Digest(b) {
		t.Error("the digest is not the bundle's")
	}
	for _, c := range []struct {
		name   string
		config map[string]string
		want   string
	}{
		{"the bundle's data", nil, `[{"result":true}]`},
		{"the config's data wins", map[string]string{"data": `{"roles":{}}`}, `[{"result":false}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := instance(t, m, c.config)
			out, err := i.Call(ctx, "example/allow", []byte(`{"user":"bob","action":"write"}`))
			if err != nil || string(out) != c.want {
				t.Fatalf("%s, %v; want %s", out, err, c.want)
			}
		})
	}
}

type entry struct {
	name string
	typ  byte
	body string
}

func tarGz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o600, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
			h.Linkname = "/etc/passwd"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
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

// bigEntry is a bundle whose entry header says one byte more than MaxBundleBytes, and
// no body: it must never be read.
func bigEntry(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "/big.rego", Typeflag: tar.TypeReg, Mode: 0o600, Size: opa.MaxBundleBytes + 1}); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadBundle(t *testing.T) {
	w := string(policy(t, "example"))
	many := []entry{{name: "/policy.wasm", body: w}}
	for range opa.MaxBundleEntries {
		many = append(many, entry{name: "/d/", typ: tar.TypeDir})
	}
	for _, c := range []struct {
		name    string
		bundle  []byte
		data    string // "" for nil
		invalid string // in the error, "" for none
	}{
		{"module only", tarGz(t, entry{name: "/policy.wasm", body: w}), "", ""},
		{"relative names, a manifest and sources ignored", tarGz(t, entry{name: ".manifest", body: "{"}, entry{name: "x.rego", body: "p"}, entry{name: "./policy.wasm", body: w}, entry{name: "data.json", body: `{"a":1}`}), `{"a":1}`, ""},
		{"data merged at its paths, numbers kept", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.json", body: `{"a":{"x":12345678901234567890}}`}, entry{name: "/a/b/data.json", body: `{"y":true}`}), `{"a":{"b":{"y":true},"x":12345678901234567890}}`, ""},
		{"not gzip", append([]byte{0x1f, 0x8b}, "garbage"...), "", "not gzip"},
		{"not a tar", func() []byte {
			var b bytes.Buffer
			z := gzip.NewWriter(&b)
			_, _ = z.Write([]byte("plain text, not a tar archive, long enough to be a header? no"))
			_ = z.Close()
			return b.Bytes()
		}(), "", "tar:"},
		{"no module", tarGz(t, entry{name: "/data.json", body: `{}`}), "", "no /policy.wasm"},
		{"climbs out", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "../../etc/data.json", body: `{}`}), "", "a path outside the bundle"},
		{"a symlink", tarGz(t, entry{name: "/policy.wasm", typ: tar.TypeSymlink}), "", "neither a file nor a directory"},
		{"a hard link", tarGz(t, entry{name: "/policy.wasm", typ: tar.TypeLink}), "", "neither a file nor a directory"},
		{"twice", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "policy.wasm", body: w}), "", "given twice"},
		{"a second module", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/x/policy.wasm", body: w}), "", "a second Wasm module"},
		{"yaml data", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.yaml", body: "a: 1"}), "", "YAML"},
		{"bad json", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.json", body: `{"a":`}), "", "not valid JSON"},
		{"two documents", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.json", body: `{} {}`}), "", "more after the document"},
		{"conflict", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.json", body: `{"a":1}`}, entry{name: "/a/data.json", body: `{}`}), "", "conflicts with another data file at data.a"},
		{"root not an object", tarGz(t, entry{name: "/policy.wasm", body: w}, entry{name: "/data.json", body: `[1]`}), "", "not an object"},
		{"too many entries", tarGz(t, many...), "", "more than 4096 entries"},
		{"too big", bigEntry(t), "", "passes 67108864 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm, data, err := opa.ReadBundle(c.bundle)
			if c.invalid != "" {
				var be *opa.BundleError
				if !errors.As(err, &be) || !errors.Is(err, opa.ErrBundle) || !strings.Contains(err.Error(), c.invalid) {
					t.Fatalf("err %v; want a *BundleError with %q", err, c.invalid)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(wasm) != w || string(data) != c.data {
				t.Fatalf("data %s, want %q (module of %d bytes)", data, c.data, len(wasm))
			}
		})
	}
}

// TestBundleThroughTheEngine: the format claims a bundle, and an engine loads it as a policy.
func TestBundleThroughTheEngine(t *testing.T) {
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx, sandbox.WithFormats(opa.Format()))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	code, err := e.Load(ctx, readBundleFile(t), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer code.Close(ctx)
	r, err := code.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	out, err := r.CallAppend(ctx, "example/allow", []byte(`{"user":"ann","action":"read"}`), nil)
	if err != nil || string(out) != `[{"result":true}]` {
		t.Fatalf("%s, %v", out, err)
	}
	if _, err := e.Load(ctx, tarGz(t, entry{name: "/data.json", body: "{}"}), sandbox.Config{}); !errors.Is(err, opa.ErrBundle) {
		t.Fatalf("a bundle without a module: %v", err)
	}
}
