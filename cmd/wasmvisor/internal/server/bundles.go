package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/bundle"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// SourceBundle is an entry's source for a plugin of a signed bundle (beside "config" and
// "api").
const SourceBundle = "bundle"

// maxBundleFiles bounds the bundles of one configuration (files named, and *.tar.gz in the
// directories named).
const maxBundleFiles = 256

// bundleState is what the server keeps about bundles and persisted plugins. Under s.mu,
// except the counter.
type bundleState struct {
	// good is the last bundle read and verified from each file.
	good map[string]*bundle.Bundle
	// declared are the plugin names of the configuration file and the bundles in force:
	// a PUT of one of them is not persisted (the declared version comes back at restart).
	declared map[string]bool
	// refused counts bundles refused, by reason (bundle.Reason, or "conflict").
	refused *prometheus.CounterVec
	// store persists plugins loaded by PUT; nil without state_dir.
	store *stateStore
	// views are the bundles as GET /v1/status shows them; read without s.mu.
	views atomic.Pointer[[]bundleView]
}

// bundleView is one bundle file in GET /v1/status: the version serving (revision, manifest
// digest, signer, plugins; empty when none) and, when the file's current content was refused
// at the last reload, why.
type bundleView struct {
	File     string   `json:"file"`
	Revision string   `json:"revision"`
	Digest   string   `json:"digest"`
	SignedBy string   `json:"signed_by"`
	Plugins  []string `json:"plugins"`
	Refused  string   `json:"refused,omitempty"`
}

// view is the bundles for GET /v1/status; [] when none.
func (b *bundleState) view() []bundleView {
	if v := b.views.Load(); v != nil {
		return *v
	}
	return []bundleView{}
}

func newBundleState(reg *prometheus.Registry, c *config.Config) *bundleState {
	b := &bundleState{good: map[string]*bundle.Bundle{}, declared: map[string]bool{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_bundles_refused_total",
			Help: "Bundles refused at a reload, by reason: archive, manifest, digest, unsigned, signature, " +
				"conflict (a plugin name also declared elsewhere), read (the file could not be read)."},
			[]string{"reason"})}
	reg.MustRegister(b.refused)
	if c.StateDir != "" {
		b.store = &stateStore{dir: c.StateDir}
	}
	return b
}

// ErrBundleConflict: a bundle declares a plugin name that the configuration file or another
// bundle declares too. The bundle is refused.
var ErrBundleConflict = errors.New("bundle: plugin name declared twice")

// bundleFiles lists the bundle files of paths: a file as named, a directory's *.tar.gz in
// name order.
func bundleFiles(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("bundles.paths: %w", err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		des, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("bundles.paths: %w", err)
		}
		for _, de := range des {
			if !de.IsDir() && strings.HasSuffix(de.Name(), ".tar.gz") {
				out = append(out, filepath.Join(p, de.Name()))
			}
		}
	}
	if len(out) > maxBundleFiles {
		return nil, fmt.Errorf("bundles.paths: %d bundle files, at most %d", len(out), maxBundleFiles)
	}
	return out, nil
}

// bundlePlugins reads c's bundles and returns their plugins and modules. A bundle that cannot
// be read, is not signed by a key of bundles.keys, or declares a name already declared is
// refused: at start that is the returned err; on reload the file's last good bundle stands in
// for it (none: its plugins are not loaded), and the refusal is logged, counted and returned
// in refusals. Under s.mu.
func (s *Server) bundlePlugins(c *config.Config, start bool) (ps []config.Plugin, wasm map[string][]byte, refusals []error, err error) {
	wasm = map[string][]byte{}
	views := []bundleView{}
	defer func() {
		if err == nil {
			s.bundles.views.Store(&views)
		}
	}()
	if len(c.Bundles.Paths) == 0 {
		clear(s.bundles.good)
		return nil, wasm, nil, nil
	}
	files, err := bundleFiles(c.Bundles.Paths)
	if err != nil {
		if start {
			return nil, nil, nil, err
		}
		// The list cannot be read: every file's last good bundle stays.
		s.refuse("read", "", err)
		refusals = append(refusals, err)
		files = nil
		for f := range s.bundles.good {
			files = append(files, f)
		}
		slices.Sort(files)
	}
	taken := map[string]string{}
	for _, p := range c.Plugins {
		taken[p.Name] = "the configuration file"
	}
	lim := bundle.Limits{EntryBytes: c.HTTP.MaxModuleBytes}
	next := map[string]*bundle.Bundle{}
	for _, f := range files {
		b, err := bundle.ReadFile(f, bundle.Options{Keys: c.Bundles.Keys, Limits: lim, Builtin: s.opts.Builtin})
		reason := ""
		if err != nil {
			reason = bundle.Reason(err)
		} else {
			for _, p := range b.Plugins {
				if by, ok := taken[p.Name]; ok {
					err, reason = fmt.Errorf("%w: plugin %q is also in %s", ErrBundleConflict, p.Name, by), "conflict"
					break
				}
			}
		}
		v := bundleView{File: f, Plugins: []string{}}
		if err != nil {
			err = fmt.Errorf("bundle %s: %w", f, err)
			if start {
				return nil, nil, nil, err
			}
			s.refuse(reason, f, err)
			refusals = append(refusals, err)
			v.Refused = err.Error()
			if b = s.bundles.good[f]; b == nil || conflict(b, taken) {
				// No last good version, or it conflicts now too: nothing of this file loads.
				views = append(views, v)
				continue
			}
		}
		v.Revision, v.Digest, v.SignedBy = b.Revision, b.Digest, b.SignedBy
		for _, p := range b.Plugins {
			v.Plugins = append(v.Plugins, p.Name)
		}
		views = append(views, v)
		next[f] = b
		for _, p := range b.Plugins {
			m, err := b.Module(p, s.opts.Builtin)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("bundle %s: plugins(%s): %w", f, p.Name, err)
			}
			taken[p.Name] = "bundle " + f
			ps, wasm[p.Name] = append(ps, p), m
		}
	}
	s.bundles.good = next
	return ps, wasm, refusals, nil
}

func conflict(b *bundle.Bundle, taken map[string]string) bool {
	for _, p := range b.Plugins {
		if _, ok := taken[p.Name]; ok {
			return true
		}
	}
	return false
}

func (s *Server) refuse(reason, file string, err error) {
	s.bundles.refused.WithLabelValues(reason).Inc()
	s.log.Error("bundle refused; its last good version (if any) keeps serving", zap.String("bundle", file),
		zap.String("reason", reason), zap.Error(err))
}

// bundleFingerprint adds the bundle files (and the directories' listings) to Watch's
// fingerprint.
func bundleFingerprint(c *config.Config, b []byte) []byte {
	files, err := bundleFiles(c.Bundles.Paths)
	if err != nil {
		return fmt.Appendf(b, "bundles:%v;", err)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			b = fmt.Appendf(b, "%s:missing;", f)
			continue
		}
		b = fmt.Appendf(b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return b
}
