// Package e2e holds the end-to-end tests of wasmvisor: they build the real binary once, start
// it on a loopback port chosen by the kernel (--listen 127.0.0.1:0 --addr-file), and talk HTTP
// to it, with well-behaved clients (e2e_test.go) and a hostile catalog (chaos_test.go).
//
// They are a package of their own, not cmd/wasmvisor's tests, for the time a cold run takes:
// a served binary cannot reuse the compiled plugins of a test process (wazero keys its cache
// by its own version, which a test binary does not know), so the package that starts servers
// compiles the standard-Go built-ins under the race detector once more. In one package with
// the CLI's own tests that put cmd/wasmvisor over its 3-minute bound from empty caches
// (210 s); as two packages, go test runs them side by side.
package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/internal/testcache"
)

// testDir is this test binary's scratch directory: the served binaries' XDG_CACHE_HOME, and
// where the binary is built once.
var testDir string

func TestMain(m *testing.M) {
	dir, err := testcache.CacheHome("wasmvisor-e2e-")
	if err != nil {
		panic(err)
	}
	testDir = dir
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}
