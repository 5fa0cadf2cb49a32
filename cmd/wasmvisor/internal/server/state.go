package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// The state directory (state_dir) keeps the plugins loaded by PUT:
//
//	plugins/NAME.json         a record: the settings PUT gave, and the module's digest
//	modules/sha256-HEX.wasm   the module, by content
//
// A PUT writes the module, then the record (each to a temporary file, synced, renamed, the
// directory synced): the record's rename is the commit, and a crash before it leaves the
// previous record, whose module is still there. Modules no record names are removed after.

// ErrState wraps every problem with a state directory's contents: a record that does not
// parse, names another plugin, has values out of bounds, or whose module is missing or does
// not match its digest. The server does not start on one (the file is named).
var ErrState = errors.New("state_dir: bad persisted plugin")

// Bounds of what the state directory may hold.
const (
	maxStateRecords     = 4096
	maxStateRecordBytes = 1 << 20
)

// stateRecord is plugins/NAME.json: what a PUT can set.
type stateRecord struct {
	Version       int               `json:"version"` // 1
	Name          string            `json:"name"`
	Module        string            `json:"module"` // "sha256:HEX"
	Builtin       string            `json:"builtin,omitempty"`
	Config        map[string]string `json:"config"`
	Instances     int               `json:"instances"`
	MemoryPages   uint32            `json:"memory_pages,omitempty"`
	CallTimeout   string            `json:"call_timeout,omitempty"` // a duration or "none"
	FailurePolicy string            `json:"failure_policy"`
	FailureAnswer string            `json:"failure_answer,omitempty"` // the JSON as given, byte for byte
	Required      bool              `json:"required"`
	SavedAt       time.Time         `json:"saved_at"`
}

type stateStore struct{ dir string }

func (st *stateStore) recordPath(name string) string {
	return filepath.Join(st.dir, "plugins", name+".json")
}

func (st *stateStore) modulePath(digest string) string {
	return filepath.Join(st.dir, "modules", strings.Replace(digest, ":", "-", 1)+".wasm")
}

// save persists a plugin loaded by PUT: its settings (with override, when set, as its config)
// and, when wasm is not nil, its module.
func (st *stateStore) save(p config.Plugin, override map[string]string, digest string, wasm []byte) error {
	builtin, _ := strings.CutPrefix(p.Wasm, config.BuiltinPrefix)
	if builtin == p.Wasm {
		builtin = ""
	}
	rec := stateRecord{Version: 1, Name: p.Name, Module: digest, Builtin: builtin, Config: p.Config,
		Instances: p.Instances, MemoryPages: p.MemoryPages, FailurePolicy: p.FailurePolicy, Required: p.Required,
		FailureAnswer: string(p.FailureAnswer),
		SavedAt:       time.Now().UTC()}
	if override != nil {
		rec.Config = override
	}
	switch {
	case p.CallTimeout < 0:
		rec.CallTimeout = "none"
	case p.CallTimeout > 0:
		rec.CallTimeout = p.CallTimeout.String()
	}
	mp := st.modulePath(digest)
	if wasm != nil {
		if _, err := os.Stat(mp); err != nil {
			if err := writeAtomic(mp, wasm); err != nil {
				return err
			}
		}
	} else if _, err := os.Stat(mp); err != nil {
		return fmt.Errorf("state_dir: module of %q: %w", p.Name, err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(st.recordPath(p.Name), b); err != nil {
		return err
	}
	return st.collect()
}

// remove forgets a persisted plugin; one that was not persisted is no error.
func (st *stateStore) remove(name string) error {
	if err := os.Remove(st.recordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state_dir: %w", err)
	}
	if err := syncDir(filepath.Dir(st.recordPath(name))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return st.collect()
}

// persisted is a plugin read back from the state directory.
type persisted struct {
	plugin config.Plugin
	wasm   []byte
	file   string
}

// load reads every persisted plugin, checking each record's bounds and its module's digest;
// modules are at most maxModule bytes.
func (st *stateStore) load(maxModule int64) ([]persisted, error) {
	des, err := os.ReadDir(filepath.Join(st.dir, "plugins"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if len(des) > maxStateRecords {
		return nil, fmt.Errorf("%w: %d files in %s, at most %d", ErrState, len(des), filepath.Join(st.dir, "plugins"), maxStateRecords)
	}
	var out []persisted
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || de.IsDir() {
			continue // a temporary file left by a crash
		}
		f := filepath.Join(st.dir, "plugins", de.Name())
		p, wasm, err := st.read(f, name, maxModule)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrState, f, err)
		}
		out = append(out, persisted{plugin: p, wasm: wasm, file: f})
	}
	return out, nil
}

func (st *stateStore) read(f, name string, maxModule int64) (config.Plugin, []byte, error) {
	var p config.Plugin
	b, err := readBounded(f, maxStateRecordBytes)
	if err != nil {
		return p, nil, err
	}
	var rec stateRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return p, nil, err
	}
	switch {
	case rec.Version != 1:
		return p, nil, fmt.Errorf("version %d, want 1", rec.Version)
	case rec.Name != name || !nameOK(rec.Name):
		return p, nil, fmt.Errorf("names plugin %q", rec.Name)
	case rec.Instances < 1 || rec.Instances > maxInstances:
		return p, nil, fmt.Errorf("instances %d out of 1 to %d", rec.Instances, maxInstances)
	case rec.MemoryPages > maxMemoryPages:
		return p, nil, fmt.Errorf("memory_pages %d over %d", rec.MemoryPages, maxMemoryPages)
	case !validPolicy(rec.FailurePolicy):
		return p, nil, fmt.Errorf("failure_policy %q", rec.FailurePolicy)
	case rec.FailureAnswer != "" && (rec.FailurePolicy == config.FailDeny ||
		len(rec.FailureAnswer) > config.MaxFailureAnswerBytes || !json.Valid([]byte(rec.FailureAnswer))):
		return p, nil, errors.New("failure_answer: not a JSON value within bounds under failure_policy allow or monitor")
	case !strings.HasPrefix(rec.Module, "sha256:") || len(rec.Module) != len("sha256:")+64:
		return p, nil, fmt.Errorf("module %q: want sha256:HEX", rec.Module)
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(rec.Module, "sha256:")); err != nil {
		return p, nil, fmt.Errorf("module %q: want sha256:HEX", rec.Module)
	}
	p = config.Plugin{Name: rec.Name, Wasm: "api", Config: rec.Config, Instances: rec.Instances,
		MemoryPages: rec.MemoryPages, Restart: "permanent", FailurePolicy: rec.FailurePolicy,
		OnFailure: config.OnFailureQuarantine, Isolation: config.IsolationShared, Required: rec.Required,
		FailureAnswer: []byte(rec.FailureAnswer),
		Clock:         "deterministic", Random: "deterministic"}
	if rec.Builtin != "" {
		p.Wasm = config.BuiltinPrefix + rec.Builtin
	}
	switch rec.CallTimeout {
	case "":
	case "none":
		p.CallTimeout = -1
	default:
		d, err := time.ParseDuration(rec.CallTimeout)
		if err != nil || d <= 0 {
			return p, nil, fmt.Errorf("call_timeout %q", rec.CallTimeout)
		}
		p.CallTimeout = d
	}
	for k := range p.Config {
		if k == "" {
			return p, nil, errors.New("an empty config key")
		}
	}
	wasm, err := readBounded(st.modulePath(rec.Module), maxModule)
	if err != nil {
		return p, nil, fmt.Errorf("module: %w", err)
	}
	if sum := sha256.Sum256(wasm); "sha256:"+hex.EncodeToString(sum[:]) != rec.Module {
		return p, nil, fmt.Errorf("module %s: the file's digest differs", rec.Module)
	}
	return p, wasm, nil
}

// collect removes the modules no record names (best effort: a module left behind costs disk,
// not correctness).
func (st *stateStore) collect() error {
	des, err := os.ReadDir(filepath.Join(st.dir, "plugins"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	used := map[string]bool{}
	for _, de := range des {
		if !strings.HasSuffix(de.Name(), ".json") {
			continue
		}
		b, err := readBounded(filepath.Join(st.dir, "plugins", de.Name()), maxStateRecordBytes)
		if err != nil {
			return nil // keep every module while a record cannot be read
		}
		var rec stateRecord
		if json.Unmarshal(b, &rec) != nil {
			return nil
		}
		used[filepath.Base(st.modulePath(rec.Module))] = true
	}
	mods, _ := os.ReadDir(filepath.Join(st.dir, "modules"))
	for _, m := range mods {
		if !used[m.Name()] {
			_ = os.Remove(filepath.Join(st.dir, "modules", m.Name()))
		}
	}
	return nil
}

// readBounded reads a regular file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over %d bytes", path, limit)
	}
	return b, nil
}

// writeAtomic writes b to path through a synced temporary file renamed over it, then syncs
// the directory: a crash leaves the old file or the new one, never part of one.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state_dir: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	return nil
}

// loadState loads the plugins persisted in state_dir at start, after the declared ones. A
// persisted plugin whose name the configuration file or a bundle declares is not loaded: the
// declared version wins, as it does at a reload after a PUT (a warning names it). Under s.mu.
func (s *Server) loadState(ctx context.Context) (changes, warnings []string, err error) {
	st := s.bundles.store
	if st == nil {
		return nil, nil, nil
	}
	ps, err := st.load(s.cfg.Load().HTTP.MaxModuleBytes)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range ps {
		if s.bundles.declared[p.plugin.Name] {
			w := fmt.Sprintf("state_dir: %s not loaded: plugin %q is declared by the configuration or a bundle, which wins",
				p.file, p.plugin.Name)
			warnings = append(warnings, w)
			s.log.Warn(w)
			continue
		}
		if _, err := s.put(ctx, p.plugin, p.wasm, "api", nil); err != nil {
			return changes, warnings, fmt.Errorf("state_dir: %s: %w", p.file, err)
		}
		changes = append(changes, "loaded "+p.plugin.Name+" (state_dir)")
	}
	return changes, warnings, nil
}

// persist saves name's entry, loaded by PUT, with wasm when the PUT sent a module. A name the
// configuration or a bundle declares is not persisted. Under s.mu.
func (s *Server) persist(name string, wasm []byte) error {
	st, e := s.bundles.store, s.entry(name)
	if st == nil || e == nil || e.source != "api" || s.bundles.declared[name] {
		return nil
	}
	return st.save(e.spec, e.override, e.digest, wasm)
}

// unpersist forgets name's persisted PUT. Under s.mu.
func (s *Server) unpersist(name string) error {
	if s.bundles.store == nil {
		return nil
	}
	return s.bundles.store.remove(name)
}

// persistFailed answers a PUT or DELETE that took effect but could not be written to
// state_dir: 500 persist_failed (the running state and the disk differ until the next
// successful PUT or DELETE of the plugin).
func (s *Server) persistFailed(w http.ResponseWriter, name string, err error) {
	s.log.Error("state_dir: the change is in force but not persisted", zap.String("plugin", name), zap.Error(err))
	writeError(w, http.StatusInternalServerError, "persist_failed",
		fmt.Sprintf("plugin %q: the change is in force but was not persisted: %v", name, err))
}
