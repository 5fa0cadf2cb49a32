// Package hosttest gives every test a host of its own.
//
//	func TestPolicy(t *testing.T) {
//		t.Parallel()
//		h := hosttest.New(t)               // fresh host, closed and leak-checked at cleanup
//		hosttest.Load(t, h, "authz", wasm) // fresh sandbox
//		out, err := h.Call(t.Context(), "authz", "evaluate", input)
//	}
//
// Hosts made here share nothing but an on-disk compilation cache (content-addressed, so
// sharing it shares no state), which is what makes a few hundred parallel tests that load the
// same multi-megabyte Go plugin cheap: the first test compiles it, the others load the code.
package hosttest

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
)

// CloseTimeout bounds the Close at cleanup.
const CloseTimeout = 30 * time.Second

// CacheDir is the compilation cache New uses unless an option overrides it: the one that
// every package's tests share, keyed by the wazero version the enclosing module builds with
// ($WASMVISOR_TEST_CACHE overrides it). It is "" when that version cannot be known (a go.work,
// wazero replaced by a directory): New then compiles without an on-disk cache, slower but
// never stale. See internal/testcache.
func CacheDir() string { return testcache.Dir() }

// New returns a fresh host with a test logger (shown only when the test fails) and the shared
// compilation cache; opts come after these defaults and override them. At t.Cleanup the host
// is closed and the test fails if Close reports an error: a supervisor that gave up, a stop
// that did not finish within CloseTimeout, or an instance that outlived the host (ErrLeak).
// Every goroutine the host started has ended once Close returns; check the whole process with
// VerifyTestMain.
func New(t testing.TB, opts ...host.Option) *host.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	base := []host.Option{host.WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))}
	if d := CacheDir(); d != "" {
		base = append(base, host.WithCacheDir(d))
	}
	h, err := host.New(ctx, append(base, opts...)...)
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

// VerifyTestMain runs the package's tests and then fails if any goroutine is left: call it
// from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
}
