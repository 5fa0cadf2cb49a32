package opa

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Bounds of ReadBundle. A bundle that passes any of them is refused with a *BundleError.
const (
	// MaxBundleBytes bounds the bundle's uncompressed content: the sum of its entries' sizes
	// (directories and ignored files included).
	MaxBundleBytes = 64 << 20
	// MaxBundleEntries bounds the number of entries of the bundle's tar.
	MaxBundleEntries = 4096
)

// ErrBundle is matched by the *BundleError ReadBundle returns.
var ErrBundle = errors.New("opa: bad bundle")

// BundleError says why a bundle was refused. It matches ErrBundle.
type BundleError struct {
	Entry  string // the tar entry at fault, if any
	Reason string
}

func (e *BundleError) Error() string {
	if e.Entry != "" {
		return fmt.Sprintf("opa: bundle: %q: %s", e.Entry, e.Reason)
	}
	return "opa: bundle: " + e.Reason
}

// Unwrap returns ErrBundle.
func (e *BundleError) Unwrap() error { return ErrBundle }

// IsBundle reports whether b starts as a gzip stream does (1f 8b), as the bundle.tar.gz of
// `opa build -t wasm` does. A Wasm module starts with \0asm, never so.
func IsBundle(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

// ReadBundle reads a bundle as `opa build -t wasm` writes it (a gzip'd tar): wasm is its
// /policy.wasm, data its data document, the data.json files of the bundle merged at their
// directories' paths (/data.json is the root; /a/b/data.json the value of data.a.b, which
// must be an object), or nil when it has none. Other entries (.manifest, the Rego sources,
// signatures) are read within the bounds and ignored; the manifest's roots are not
// enforced. Refused with a *BundleError: content past MaxBundleBytes or MaxBundleEntries, an
// entry whose path climbs out of the bundle (..) or that is neither a file nor a directory
// (links), an entry given twice, a data.yaml (not read here), no /policy.wasm or a second
// Wasm module, a data.json that is not valid JSON or that conflicts with another.
func ReadBundle(b []byte) (wasm, data []byte, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, &BundleError{Reason: "not gzip: " + err.Error()}
	}
	defer zr.Close()
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	seen := map[string]bool{}
	var total int64
	var root any
	hasData := false
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, &BundleError{Reason: "tar: " + err.Error()}
		}
		if n >= MaxBundleEntries {
			return nil, nil, &BundleError{Reason: fmt.Sprintf("more than %d entries", MaxBundleEntries)}
		}
		name, err := entryPath(h.Name)
		if err != nil {
			return nil, nil, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, nil, &BundleError{Entry: h.Name, Reason: "neither a file nor a directory"}
		}
		if h.Size < 0 || total+h.Size > MaxBundleBytes {
			return nil, nil, &BundleError{Entry: h.Name, Reason: fmt.Sprintf("the bundle's content passes %d bytes", MaxBundleBytes)}
		}
		total += h.Size
		if seen[name] {
			return nil, nil, &BundleError{Entry: h.Name, Reason: "given twice"}
		}
		seen[name] = true
		base := path.Base(name)
		switch {
		case name == "/policy.wasm":
		case strings.HasSuffix(base, ".wasm"):
			return nil, nil, &BundleError{Entry: h.Name, Reason: "a second Wasm module: only /policy.wasm is run"}
		case base == "data.yaml" || base == "data.yml":
			return nil, nil, &BundleError{Entry: h.Name, Reason: "YAML data is not read: give data.json"}
		case base == "data.json":
		default:
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return nil, nil, &BundleError{Entry: h.Name, Reason: err.Error()}
			}
			continue
		}
		body := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, body); err != nil {
			return nil, nil, &BundleError{Entry: h.Name, Reason: err.Error()}
		}
		if name == "/policy.wasm" {
			wasm = body
			continue
		}
		if root, err = mergeData(root, path.Dir(name), body); err != nil {
			return nil, nil, &BundleError{Entry: h.Name, Reason: err.Error()}
		}
		hasData = true
	}
	if wasm == nil {
		return nil, nil, &BundleError{Reason: "no /policy.wasm"}
	}
	if hasData {
		if _, ok := root.(map[string]any); !ok {
			return nil, nil, &BundleError{Entry: "/data.json", Reason: "the data document is not an object"}
		}
		if data, err = json.Marshal(root); err != nil {
			return nil, nil, &BundleError{Reason: "data: " + err.Error()}
		}
	}
	return wasm, data, nil
}

// entryPath is a tar entry's name as an absolute, clean path; a name that climbs out of the
// bundle, is empty, or holds a NUL or a backslash is refused.
func entryPath(name string) (string, error) {
	bad := name == "" || strings.ContainsAny(name, "\x00\\")
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." {
			bad = true
		}
	}
	if bad {
		return "", &BundleError{Entry: name, Reason: "a path outside the bundle"}
	}
	return path.Clean("/" + name), nil
}

// mergeData merges the JSON document doc into root at dir ("/" is the root, /a/b the value
// data.a.b). Numbers keep their text.
func mergeData(root any, dir string, doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not valid JSON: more after the document")
	}
	var keys []string
	if dir != "/" {
		keys = strings.Split(strings.TrimPrefix(dir, "/"), "/")
	}
	for i := len(keys) - 1; i >= 0; i-- {
		v = map[string]any{keys[i]: v}
	}
	return merge(root, v, "data")
}

// merge merges b into a: objects key by key, anything else only into nothing.
func merge(a, b any, at string) (any, error) {
	if a == nil {
		return b, nil
	}
	ao, aok := a.(map[string]any)
	bo, bok := b.(map[string]any)
	if !aok || !bok {
		return nil, fmt.Errorf("conflicts with another data file at %s", at)
	}
	for k, bv := range bo {
		av, ok := ao[k]
		if !ok {
			ao[k] = bv
			continue
		}
		m, err := merge(av, bv, at+"."+k)
		if err != nil {
			return nil, err
		}
		ao[k] = m
	}
	return ao, nil
}
