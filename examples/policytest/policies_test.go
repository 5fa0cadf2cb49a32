package policytest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestPolicies runs the cases file of each example policy under go test: one subtest per case.
func TestPolicies(t *testing.T) {
	// One engine for every case's host, holding each plugin's code while its cases run: a
	// case instantiates the code instead of compiling the plugin again.
	var eopts []sandbox.Option
	if dir := hosttest.CacheDir(); dir != "" {
		eopts = append(eopts, sandbox.WithCacheDir(dir))
	}
	e, err := sandbox.NewEngine(t.Context(), eopts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	opts := casetest.Options{HostOptions: []host.Option{host.WithEngine(e)}}
	for _, name := range []string{"authz", "validate", "ratelimit"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join("..", "..", "plugins", name)
			wasm := hosttest.ReadFile(t, filepath.Join(dir, name+".wasm"))
			release, err := e.Keep(context.Background(), wasm, sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(release)
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
