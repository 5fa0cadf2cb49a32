// Package testcache names the on-disk compilation cache that the tests of every package share,
// across packages and across runs.
//
// Compiling a multi-megabyte standard-Go plugin under the race detector takes 10–20 s on a
// 2-core machine; reading it back from wazero's file cache takes milliseconds. Before this
// package each test binary compiled into a cache of its own that it deleted at exit, so one run
// of the suite compiled the same plugin in five processes, and the next run did it again.
//
// # Keyed so that it cannot serve stale code
//
// wazero keys a cache entry on the module's bytes (for wasmvisor: the instrumented bytes, so a
// change of the instrumentation is a new key), the CPU's features, and wazero's own version,
// which it reads from the binary's build information. A test binary carries no dependency
// versions in its build information, so inside tests wazero's version reads as "dev", and
// entries written by one wazero would be read back by another. Dir therefore puts the cache in
// a directory named after the wazero version that go.mod requires (after any replace). When
// that version cannot be known — no go.mod above the working directory, a go.work in effect, or
// wazero replaced by a directory — Dir returns "" and the callers compile without a shared
// cache: slower, never stale.
//
// # Bounded
//
// Entries are tens of megabytes for a Go plugin. Dir prunes, at most once an hour per cache,
// entries not written for a week (a rewritten module gets a new key, so old keys only age).
package testcache

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Env names the environment variable that overrides Dir: a directory the caller vouches for.
const Env = "WASMVISOR_TEST_CACHE"

const (
	wazeroPath = "github.com/tetratelabs/wazero"
	maxAge     = 7 * 24 * time.Hour
	pruneEvery = time.Hour
)

// Dir returns the shared compilation cache directory, creating it, or "" when no directory can
// be shared safely (see the package doc). It is computed once per process.
func Dir() string { return dir() }

// CacheHome makes a directory for XDG_CACHE_HOME whose "wasmvisor" entry, the commands'
// default cache, is the shared cache (Dir), or nothing when there is none, so that commands a
// test runs, or binaries it serves, use the tests' compiled code and never the user's. The
// caller removes the directory.
func CacheHome(prefix string) (string, error) {
	home, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if shared := Dir(); shared != "" {
		if err := os.Symlink(shared, filepath.Join(home, "wasmvisor")); err != nil {
			_ = os.RemoveAll(home)
			return "", err
		}
	}
	return home, nil
}

var dir = sync.OnceValue(func() string {
	if d := os.Getenv(Env); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	v, err := WazeroVersion(wd)
	if err != nil {
		return ""
	}
	d := filepath.Join(os.TempDir(), "wasmvisor-test-cache-"+strconv.Itoa(os.Getuid()), "wazero-"+v)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return ""
	}
	prune(d, time.Now())
	return d
})

// ErrUnknownVersion is returned by WazeroVersion when the wazero in use cannot be named by a
// module version.
var ErrUnknownVersion = errors.New("testcache: wazero's version is not known")

// WazeroVersion returns the version of wazero that the module enclosing dir builds with: the
// version its go.mod requires, or the version a replace directive substitutes. It fails with
// ErrUnknownVersion when there is no go.mod, when a go.work file may select other versions, or
// when wazero is replaced by a directory or not required at all.
func WazeroVersion(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if os.Getenv("GOWORK") != "off" {
		if w := os.Getenv("GOWORK"); w != "" {
			return "", ErrUnknownVersion
		}
		if _, ok := findUp(dir, "go.work"); ok {
			return "", ErrUnknownVersion
		}
	}
	gomod, ok := findUp(dir, "go.mod")
	if !ok {
		return "", ErrUnknownVersion
	}
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseWazeroVersion(bufio.NewScanner(f))
}

func parseWazeroVersion(sc *bufio.Scanner) (string, error) {
	var required, replaced string
	block := "" // "require" or "replace" inside a parenthesized block
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		kind := block
		switch {
		case block != "" && fields[0] == ")":
			block = ""
			continue
		case block == "" && len(fields) == 2 && fields[1] == "(" && (fields[0] == "require" || fields[0] == "replace"):
			block = fields[0]
			continue
		case block == "" && (fields[0] == "require" || fields[0] == "replace"):
			kind, fields = fields[0], fields[1:]
		case block == "":
			continue
		}
		v, r := entry(kind, fields)
		if v != "" {
			required = v
		}
		if r != "" {
			replaced = r
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	switch {
	case replaced == "dir":
		return "", ErrUnknownVersion
	case replaced != "":
		return replaced, nil
	case required != "":
		return required, nil
	}
	return "", ErrUnknownVersion
}

// entry reads one require or replace line (without its keyword). It returns the required
// version, or the replacement: a version, or "dir" for a replacement by a directory.
func entry(kind string, fields []string) (required, replaced string) {
	if len(fields) == 0 || fields[0] != wazeroPath {
		return "", ""
	}
	switch kind {
	case "require":
		if len(fields) >= 2 {
			return fields[1], ""
		}
	case "replace":
		// wazero [v] => target [v]
		for i, f := range fields {
			if f != "=>" {
				continue
			}
			switch rest := fields[i+1:]; len(rest) {
			case 1:
				return "", "dir"
			case 2:
				return "", rest[1]
			}
		}
	}
	return "", ""
}

func findUp(dir, name string) (string, bool) {
	for {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// prune removes, at most once per pruneEvery, the cache entries under d last written more than
// maxAge before now. An entry removed while another process reads it stays readable to that
// process (it holds the file open); a later lookup misses and compiles again.
func prune(d string, now time.Time) {
	mark := filepath.Join(d, ".pruned")
	if st, err := os.Stat(mark); err == nil && now.Sub(st.ModTime()) < pruneEvery {
		return
	}
	_ = os.WriteFile(mark, nil, 0o600)
	_ = os.Chtimes(mark, now, now)
	_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || p == mark {
			return nil
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > maxAge {
			_ = os.Remove(p)
		}
		return nil
	})
}
