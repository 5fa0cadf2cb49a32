package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// source is the manifest `bundle build` reads: a revision and plugins whose wasm paths are
// files relative to it (or builtin:NAME).
type source struct {
	Revision string    `yaml:"revision"`
	Plugins  yaml.Node `yaml:"plugins"`
}

// Build makes an unsigned bundle from the source manifest at manifestPath: every plugin's
// module file goes into the archive under its base name, with its sha256 in the written
// manifest, and the plugins are validated as the server will (o's Builtin, Limits). The
// archive is reproducible: the same inputs give the same bytes.
func Build(manifestPath string, o Options) ([]byte, error) {
	data, err := readFileMax(manifestPath, MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrManifest, manifestPath, MaxManifestBytes)
	}
	var src source
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&src); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrManifest, manifestPath, oneLine(err.Error()))
	}
	if src.Plugins.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%w: %s: want a list of plugins", ErrManifest, manifestPath)
	}
	l := o.Limits.withDefaults()
	dir := filepath.Dir(manifestPath)
	files := map[string][]byte{}
	modules := map[string]string{}
	from := map[string]string{}
	for i, pn := range src.Plugins.Content {
		if pn.Kind != yaml.MappingNode {
			continue // config.Parse names it below
		}
		for j := 0; j+1 < len(pn.Content); j += 2 {
			k, v := pn.Content[j], pn.Content[j+1]
			if k.Value != "wasm" || v.Kind != yaml.ScalarNode || v.Value == "" || strings.HasPrefix(v.Value, config.BuiltinPrefix) {
				continue
			}
			p := v.Value
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			name := path.Base(filepath.ToSlash(p))
			if prev, ok := from[name]; ok && prev != p {
				return nil, fmt.Errorf("%w: plugins[%d].wasm: %q and %q have the same file name", ErrManifest, i, prev, p)
			}
			if err := checkName(name); err != nil {
				return nil, fmt.Errorf("%w: plugins[%d].wasm: %w", ErrManifest, i, err)
			}
			if _, ok := files[name]; !ok {
				st, err := os.Stat(p)
				if err != nil {
					return nil, fmt.Errorf("plugins[%d].wasm: %w", i, err)
				}
				if st.Size() > l.EntryBytes {
					return nil, fmt.Errorf("%w: plugins[%d].wasm: %q is over %d bytes", ErrArchive, i, p, l.EntryBytes)
				}
				if !st.Mode().IsRegular() {
					return nil, fmt.Errorf("%w: plugins[%d].wasm: %q is not a regular file", ErrManifest, i, p)
				}
				b, err := readFileMax(p, l.EntryBytes)
				if err != nil {
					return nil, fmt.Errorf("plugins[%d].wasm: %w", i, err)
				}
				if int64(len(b)) > l.EntryBytes {
					return nil, fmt.Errorf("%w: plugins[%d].wasm: %q is over %d bytes", ErrArchive, i, p, l.EntryBytes)
				}
				files[name], modules[name], from[name] = b, digest(b), p
			}
			v.Value, v.Style = name, 0
		}
	}
	out := struct {
		Revision string            `yaml:"revision,omitempty"`
		Modules  map[string]string `yaml:"modules,omitempty"`
		Plugins  *yaml.Node        `yaml:"plugins"`
	}{src.Revision, modules, &src.Plugins}
	manifest, err := yaml.Marshal(&out)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrManifest, err.Error())
	}
	if _, err := parseManifest(manifest, files, o.Builtin, o.Builtins); err != nil {
		return nil, err
	}
	return writeArchive(manifest, nil, files)
}

// Sign adds a signature by key, under keyID, to the bundle archive (replacing one by the same
// id) and returns the new archive. The bundle is read as Read does, without checking the
// signatures already there.
func Sign(archive []byte, keyID string, key ed25519.PrivateKey, o Options) ([]byte, error) {
	if keyID == "" || strings.ContainsAny(keyID, " \t\n\"") || len(keyID) > 128 {
		return nil, fmt.Errorf("%w: key id %q: want 1 to 128 characters, no spaces or quotes", ErrKey, keyID)
	}
	o.Keys = nil
	b, err := Read(bytes.NewReader(archive), o)
	if err != nil {
		return nil, err
	}
	sigs := slices.DeleteFunc(slices.Clone(b.Signatures), func(s Signature) bool { return s.KeyID == keyID })
	if len(sigs) >= MaxSignatures {
		return nil, fmt.Errorf("%w: already %d signatures", ErrSignature, len(sigs))
	}
	sigs = append(sigs, Signature{KeyID: keyID, Algorithm: AlgEd25519, Signature: ed25519.Sign(key, signedMessage(b.Manifest))})
	sf, err := json.MarshalIndent(signaturesFile{Signatures: sigs}, "", "  ")
	if err != nil {
		return nil, err
	}
	return writeArchive(b.Manifest, sf, b.Files)
}

// writeArchive writes a reproducible tar.gz: the manifest, the signatures when not nil, then
// the files in name order, with fixed times, owners and modes.
func writeArchive(manifest, sigs []byte, files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: 0o644,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put(ManifestName, manifest); err != nil {
		return nil, err
	}
	if sigs != nil {
		if err := put(SignaturesName, sigs); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := put(n, files[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readFileMax reads at most limit+1 bytes of path: a file over limit is returned one byte
// over, for the caller's check, never read whole.
func readFileMax(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}
