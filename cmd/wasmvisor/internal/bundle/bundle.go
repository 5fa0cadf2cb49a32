// Package bundle reads, builds and signs wasmvisor's signed bundles: a tar.gz holding a
// manifest (manifest.yaml: a revision, the sha256 of every module file, and the plugins, in
// the configuration file's plugin syntax), the module files it names, and a signatures file
// (.signatures.json: ed25519 signatures of the manifest, by key id). The manifest's digests
// tie the modules to the signed manifest, so one signature covers the whole bundle.
//
// Read is the only way a bundle comes in, and everything about its input is bounded (Limits):
// the archive's size, the number of entries, each entry's size and the total; a path that
// leaves the archive, a link, a duplicate or an entry the manifest does not name is refused.
// Every refusal wraps one of the errors below (errors.Is), never a panic.
//
// The format and why it is not OPA's (a JWS over a list of file hashes) are in README.md
// beside this file and in RATIONALE.md ("Signed bundles").
//
// Only cmd/wasmvisor uses this package. Its functions are safe for concurrent use.
package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// The names of a bundle's own entries.
const (
	ManifestName   = "manifest.yaml"
	SignaturesName = ".signatures.json"
)

// signedPrefix starts the message an ed25519 signature covers, before the manifest's bytes: a
// signature made for something else cannot pass for a bundle's.
const signedPrefix = "wasmvisor-bundle-v1\x00"

// The errors of Read and Verify; each refusal wraps exactly one of them.
var (
	// ErrArchive: not a gzip'd tar, or an entry out of bounds, outside the archive, a link,
	// a duplicate, or not named by the manifest.
	ErrArchive = errors.New("bundle: bad archive")
	// ErrManifest: the manifest is missing, not YAML, or its plugins are not valid.
	ErrManifest = errors.New("bundle: bad manifest")
	// ErrDigest: a module file's sha256 is not the one in the manifest, or a file the
	// manifest lists is missing.
	ErrDigest = errors.New("bundle: module digest mismatch")
	// ErrUnsigned: no signatures file, or no signature in it.
	ErrUnsigned = errors.New("bundle: not signed")
	// ErrSignature: no signature verifies with a trusted key (a tampered manifest, a
	// signature by an unknown key, a malformed signatures file).
	ErrSignature = errors.New("bundle: bad signature")
)

// Reason is a short label for err's kind: archive, manifest, digest, unsigned, signature, or
// "read" for anything else (the file could not be read). Metrics count refusals by it.
func Reason(err error) string {
	for _, k := range []struct {
		err    error
		reason string
	}{{ErrArchive, "archive"}, {ErrManifest, "manifest"}, {ErrDigest, "digest"},
		{ErrUnsigned, "unsigned"}, {ErrSignature, "signature"}} {
		if errors.Is(err, k.err) {
			return k.reason
		}
	}
	return "read"
}

// Bundle is a bundle read and checked: every module's digest matches the manifest, and (from
// Read with keys) a trusted key signed the manifest.
type Bundle struct {
	// Revision is the manifest's revision, as written ("" when absent).
	Revision string
	// Digest is "sha256:" and the hex SHA-256 of the manifest: it identifies the bundle.
	Digest string
	// SignedBy is the id of the key whose signature verified; "" when not verified.
	SignedBy string
	// Plugins are the manifest's plugins, validated as the configuration file's; a module's
	// Path is its name in the bundle (Module).
	Plugins []config.Plugin
	// Manifest is the manifest's bytes, as signed.
	Manifest []byte
	// Files are the module files by name.
	Files map[string][]byte
	// Signatures are the signatures as read (nil when unsigned).
	Signatures []Signature
}

// Module is p's module bytes: a file of the bundle, or a built-in through builtin.
func (b *Bundle) Module(p config.Plugin, builtin func(string) ([]byte, bool)) ([]byte, error) {
	if p.Builtin != "" {
		if builtin != nil {
			if m, ok := builtin(p.Builtin); ok {
				return m, nil
			}
		}
		return nil, fmt.Errorf("no built-in plugin %q", p.Builtin)
	}
	m, ok := b.Files[p.Path]
	if !ok {
		return nil, fmt.Errorf("%w: no module %q", ErrDigest, p.Path)
	}
	return m, nil
}

// manifest is manifest.yaml. Plugins stay a YAML node: config.Parse validates them.
type manifest struct {
	Revision string            `yaml:"revision"`
	Modules  map[string]string `yaml:"modules"` // file name -> "sha256:HEX"
	Plugins  yaml.Node         `yaml:"plugins"`
}

// parseManifest reads a manifest and checks files against it: the same set of names, each
// with its digest. builtin resolves builtin:NAME plugins (nil: none allowed).
func parseManifest(data []byte, files map[string][]byte, builtin func(string) ([]byte, bool), builtins []string) (*Bundle, error) {
	var m manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrManifest, oneLine(err.Error()))
	}
	for name, want := range m.Modules {
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w: modules: %w", ErrManifest, err)
		}
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("%w: %q is in the manifest but not in the bundle", ErrDigest, name)
		}
		if got := digest(b); got != want {
			return nil, fmt.Errorf("%w: %q is %s, the manifest says %q", ErrDigest, name, got, want)
		}
	}
	for name := range files {
		if _, ok := m.Modules[name]; !ok {
			return nil, fmt.Errorf("%w: %q is not in the manifest's modules", ErrArchive, name)
		}
	}
	doc := yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "plugins"}, &m.Plugins}}
	if m.Plugins.Kind == 0 {
		doc.Content[1] = &yaml.Node{Kind: yaml.SequenceNode}
	}
	pd, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrManifest, oneLine(err.Error()))
	}
	mods := files
	if mods == nil {
		mods = map[string][]byte{}
	}
	c, err := config.Parse(config.Input{Data: pd, Source: ManifestName, Env: []string{}, Modules: mods,
		Builtin: builtin, Builtins: builtins})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	used := map[string]bool{}
	for _, p := range c.Plugins {
		used[p.Path] = true
	}
	for name := range files {
		if !used[name] {
			return nil, fmt.Errorf("%w: module %q is not any plugin's", ErrManifest, name)
		}
	}
	return &Bundle{Revision: m.Revision, Digest: digest(data), Plugins: c.Plugins, Manifest: data, Files: files}, nil
}

// checkName refuses a file name that is not a plain relative path inside the archive.
func checkName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return fmt.Errorf("file name %q: want 1 to 255 bytes", name)
	case strings.HasPrefix(name, "/") || strings.Contains(name, "\\"):
		return fmt.Errorf("file name %q: not a relative slash-separated path", name)
	case slices.Contains(strings.Split(name, "/"), "..") || slices.Contains(strings.Split(name, "/"), "."):
		return fmt.Errorf("file name %q: leaves the archive", name)
	case strings.Contains(name, "//") || strings.HasSuffix(name, "/"):
		return fmt.Errorf("file name %q: not a clean path", name)
	case name == ManifestName || name == SignaturesName:
		return fmt.Errorf("file name %q: reserved", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("file name %q: control character", name)
		}
	}
	return nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// signedMessage is what a signature covers.
func signedMessage(manifest []byte) []byte {
	return append([]byte(signedPrefix), manifest...)
}

// verify returns the id of the first key in keys (by sorted id) with a valid signature.
func verify(manifest []byte, sigs []Signature, keys map[string]ed25519.PublicKey) (string, error) {
	if len(sigs) == 0 {
		return "", ErrUnsigned
	}
	msg := signedMessage(manifest)
	var ids, bad []string
	for _, s := range sigs {
		ids = append(ids, s.KeyID)
		k, ok := keys[s.KeyID]
		if !ok {
			continue
		}
		if s.Algorithm == AlgEd25519 && len(s.Signature) == ed25519.SignatureSize && ed25519.Verify(k, msg, s.Signature) {
			return s.KeyID, nil
		}
		bad = append(bad, s.KeyID)
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("%w: the signature by key %s does not verify (the manifest or the signature changed)",
			ErrSignature, strings.Join(quote(bad), ", "))
	}
	return "", fmt.Errorf("%w: signed by %s, none of them a trusted key", ErrSignature, strings.Join(quote(ids), ", "))
}

func quote(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
