package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
)

// cacheState is state.json in cluster.cache_dir.
type cacheState struct {
	Revision uint64          `json:"revision"`
	Specs    map[string]Spec `json:"specs"`
}

func (n *Node) statePath() string { return filepath.Join(n.c.CacheDir, "state.json") }

func (n *Node) modulePath(s Spec) string {
	return filepath.Join(n.c.CacheDir, "modules", hexOf(s.Digest)+".wasm")
}

// readCache reads state.json (at most max_plugins specs of max_spec_bytes); no file is no
// cache. Each spec is validated: an invalid one is left out.
func (n *Node) readCache() (map[string]Spec, uint64, error) {
	f, err := os.Open(n.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = f.Close() }()
	limit := int64(n.c.MaxPlugins)*n.c.MaxSpecBytes + 4096
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(b)) > limit {
		return nil, 0, fmt.Errorf("cluster: %s is over %d bytes", n.statePath(), limit)
	}
	var cs cacheState
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, 0, fmt.Errorf("cluster: %s: %w", n.statePath(), err)
	}
	out := map[string]Spec{}
	for name, s := range cs.Specs {
		if err := s.Validate(n.c.MaxModuleBytes); err != nil || s.Name != name || len(out) >= n.c.MaxPlugins {
			n.log.Warn("cluster: a cached spec is left out")
			continue
		}
		out[name] = s
	}
	return out, cs.Revision, nil
}

// cachedModule reads s's module from the cache: bounded, its digest checked.
func (n *Node) cachedModule(s Spec) ([]byte, error) {
	f, err := os.Open(n.modulePath(s))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, n.c.MaxModuleBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n.c.MaxModuleBytes || digestOf(b) != s.Digest {
		return nil, &SpecError{s.Name, "module", "the cached module does not match " + s.Digest}
	}
	return b, nil
}

// saveModule writes s's module into the cache (once: the name is its digest).
func (n *Node) saveModule(s Spec, wasm []byte) error {
	p := n.modulePath(s)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return writeAtomic(p, wasm)
}

// saveCache writes what the node serves, and the revision it processed, to state.json.
// Modules no spec names are left in place (a later revision may name them again).
func (n *Node) saveCache() error {
	n.mu.Lock()
	cs := cacheState{Revision: n.revision, Specs: maps.Clone(n.specs)}
	n.mu.Unlock()
	b, err := json.Marshal(cs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.c.CacheDir, 0o700); err != nil {
		return err
	}
	return writeAtomic(n.statePath(), b)
}

// writeAtomic writes b to p through a temporary file and a rename: a crash leaves the old
// file or the new one.
func writeAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}
