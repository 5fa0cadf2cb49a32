package policytest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// TestPolicies runs the cases file of each example policy under go test: one subtest per case.
func TestPolicies(t *testing.T) {
	var opts casetest.Options
	if dir := hosttest.CacheDir(); dir != "" {
		opts.HostOptions = []host.Option{host.WithCacheDir(dir)}
	}
	for _, name := range []string{"authz", "validate", "ratelimit"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "plugins", name)
			wasm := hosttest.ReadFile(t, filepath.Join(dir, name+".wasm"))
			r, err := os.Open(filepath.Join(dir, "cases.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f, err := casetest.Parse(r)
			if err != nil {
				t.Fatal(err)
			}
			casetest.Run(t, wasm, f, opts)
		})
	}
}

// TestMain checks that every host's goroutines ended.
func TestMain(m *testing.M) { hosttest.VerifyTestMain(m) }
