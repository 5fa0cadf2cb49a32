// Package hosttest gives every test a host of its own.
//
//	func TestPolicy(t *testing.T) {
//		t.Parallel()
//		h := hosttest.New(t)               // fresh host, closed and leak-checked at cleanup
//		hosttest.Load(t, h, "authz", wasm) // fresh sandbox
//		out, err := h.Call(t.Context(), "authz", "evaluate", input)
//	}
//
// Hosts made here share compiled code and nothing else: one engine for the whole test binary
// (host.WithEngine), backed by an on-disk compilation cache that every package's tests share
// (content-addressed, so sharing it shares no state). A plugin's bytes are checked and
// compiled once per test binary, by the first test that loads them or by Precompile, and every
// later host instantiates that code: a few hundred parallel tests that each load the same
// multi-megabyte Go plugin pay for one compilation, and a closed host keeps nothing of it
// (testing keeps every cleanup, so every host, reachable until the binary exits). Instances,
// memories, supervisors, buses and registries are each host's own. VerifyTestMain closes the
// shared engine after the tests; a test binary that does not call it leaves the engine's
// watchdog goroutine to the process's exit.
//
// The alternative rejected: an engine per host, sharing only the on-disk cache. wazero then
// decodes and validates the module again for every host (about a second per load of a Go
// plugin under the race detector), and keeps a decoded copy per host.
package hosttest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// CloseTimeout bounds the Close at cleanup.
const CloseTimeout = 30 * time.Second

// CacheDir is the compilation cache New uses unless an option overrides it: the one that
// every package's tests share, keyed by the wazero version the enclosing module builds with
// ($WASMVISOR_TEST_CACHE overrides it). It is "" when that version cannot be known (a go.work,
// wazero replaced by a directory): New then compiles without an on-disk cache, slower but
// never stale. See internal/testcache.
func CacheDir() string { return testcache.Dir() }

// New returns a fresh host with a test logger (shown only when the test fails), the test
// binary's shared engine, whose compilation cache every format compiles with; opts come
// after these defaults and override them, except that the engine's deadline resolution and
// cache cannot be overridden (New fails: use host.New for a host with an engine of its own). At t.Cleanup the host
// is closed and the test fails if Close reports an error: a supervisor that gave up, a stop
// that did not finish within CloseTimeout, or an instance that outlived the host (ErrLeak).
// Every goroutine the host started has ended once Close returns; check the whole process with
// VerifyTestMain.
func New(t testing.TB, opts ...host.Option) *host.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	e, err := engine()
	if err != nil {
		t.Fatalf("hosttest: %v", err)
	}
	base := []host.Option{host.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))}
	h, err := host.New(ctx, append(append(base, opts...), host.WithEngine(e))...)
	if err != nil {
		t.Fatalf("hosttest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("hosttest: close: %v", err)
		}
	})
	return h
}

// Load loads wasm under name with the plugin's defaults and fails the test on error.
func Load(t testing.TB, h *host.Host, name string, wasm []byte) {
	t.Helper()
	LoadPlugin(t, h, host.Plugin{Name: name, Wasm: wasm})
}

// LoadTimeout bounds a load in a test binary that has no deadline of its own.
const LoadTimeout = 10 * time.Minute

// LoadPlugin loads p and fails the test on error. The load is bounded by the test binary's
// own deadline (go test -timeout), not by a fixed limit: the first load of a multi-megabyte
// plugin compiles it, which a cold compilation cache, the race detector and a loaded machine
// can stretch to tens of seconds, and a fixed limit would fail exactly that first run. A
// test binary without a deadline gets LoadTimeout.
func LoadPlugin(t testing.TB, h *host.Host, p host.Plugin) {
	t.Helper()
	deadline := time.Now().Add(LoadTimeout)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := d.Deadline(); ok {
			deadline = td
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	_ = precompile(ctx, p) // keeps the code for the next test; an error is Load's to report
	if err := h.Load(ctx, p); err != nil {
		t.Fatalf("hosttest: %v", err)
	}
}

// ReadFile reads a plugin (or any fixture) and fails the test on error.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("hosttest: %v", err)
	}
	return b
}

// Precompile checks and compiles each plugin's bytes (with its memory limit, which the code
// depends on) into the shared engine and keeps the code until VerifyTestMain, so that no test
// pays for it, or has to allow for it in a deadline. Call it from TestMain, or from a test
// before its parallel subtests. LoadPlugin does the same for what it loads. Only native
// modules (no ABI problem: sandbox.Inspect) are precompiled: another format's plugins (see
// host.WithFormats) are compiled by each host, from the shared cache.
func Precompile(ctx context.Context, plugins ...host.Plugin) error {
	for _, p := range plugins {
		if err := precompile(ctx, p); err != nil {
			return fmt.Errorf("hosttest: precompile %q: %w", p.Name, err)
		}
	}
	return nil
}

// VerifyTestMain runs the package's tests, closes the shared engine and then fails if any
// goroutine is left: call it from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if err := closeShared(context.Background()); err != nil && code == 0 {
		fmt.Fprintf(os.Stderr, "hosttest: closing the shared engine: %v\n", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// shared is the test binary's engine; the code Precompile and LoadPlugin keep is kept in it
// (sandbox.Engine.Keep) until VerifyTestMain closes it.
var shared struct {
	mu     sync.Mutex
	eng    *sandbox.Engine
	closed bool
}

func engine() (*sandbox.Engine, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.closed {
		return nil, fmt.Errorf("hosttest: the shared engine is closed (VerifyTestMain has returned)")
	}
	if shared.eng == nil {
		var opts []sandbox.Option
		if d := CacheDir(); d != "" {
			opts = append(opts, sandbox.WithCacheDir(d))
		}
		e, err := sandbox.NewEngine(context.Background(), opts...)
		if err != nil {
			return nil, err
		}
		shared.eng = e
	}
	return shared.eng, nil
}

// precompile keeps p's code in the shared engine until it closes. Concurrent callers with the
// same bytes wait for one compilation (the engine's).
func precompile(ctx context.Context, p host.Plugin) error {
	e, err := engine()
	if err != nil {
		return err
	}
	if info, err := sandbox.Inspect(p.Wasm); err != nil || len(info.Problems) > 0 {
		return nil // not a native module (another format's, or broken: Load reports it)
	}
	_, err = e.Keep(ctx, p.Wasm, sandbox.Config{Limits: p.Limits}) // released by the engine's Close
	return err
}

func closeShared(ctx context.Context) error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.closed = true
	if shared.eng == nil {
		return nil
	}
	return shared.eng.Close(ctx)
}
