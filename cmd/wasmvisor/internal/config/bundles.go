package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Bundles is the bundles section: signed bundles of plugins (package bundle) and the keys
// that may sign them.
type Bundles struct {
	// Paths are bundle files or directories (every *.tar.gz in one), resolved against the
	// config file's directory; watched like the file.
	Paths []string
	// Keys are the public keys a bundle's signature must verify against, by key id.
	Keys map[string]ed25519.PublicKey
}

type rawBundles struct {
	Paths []string          `yaml:"paths"`
	Keys  map[string]string `yaml:"keys"`
}

// MaxBundleKeys bounds bundles.keys.
const MaxBundleKeys = 64

// parseBundles validates the bundles section: every key is the standard base64 of a 32-byte
// ed25519 public key (what `wasmvisor bundle keygen` writes to NAME.pub), and paths need a key.
func parseBundles(r rawBundles, dir string, add func(string, string, ...any)) Bundles {
	var b Bundles
	for i, p := range r.Paths {
		if p == "" {
			add(fmt.Sprintf("bundles.paths[%d]", i), "empty path")
			continue
		}
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		b.Paths = append(b.Paths, p)
	}
	if len(r.Keys) > MaxBundleKeys {
		add("bundles.keys", "at most %d keys, got %d", MaxBundleKeys, len(r.Keys))
	}
	ids := make([]string, 0, len(r.Keys))
	for id := range r.Keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		k := "bundles.keys." + id
		if !nameRE.MatchString(id) {
			add(k, "want a key id of letters, digits, '_', '.', '-', got %q", id)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Keys[id]))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			add(k, "want the base64 of a %d-byte ed25519 public key (wasmvisor bundle keygen)", ed25519.PublicKeySize)
			continue
		}
		if b.Keys == nil {
			b.Keys = map[string]ed25519.PublicKey{}
		}
		b.Keys[id] = raw
	}
	if len(b.Paths) > 0 && len(r.Keys) == 0 {
		add("bundles.keys", "bundles need at least one public key: an unsigned bundle is refused")
	}
	return b
}
