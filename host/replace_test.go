package host_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Replace is make-before-break: calls in flight and calls made during the hand-over all
// succeed, the new module serves afterwards with the new config, and a broken new version
// leaves the old one serving.
func TestReplaceMakeBeforeBreak(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	ctx := ctxT(t)
	cVersion := hosttest.ReadFile(t, "../plugins/conformance/c/conformance.wasm")
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2, Config: map[string]string{"v": "1"}})
	before, _ := h.Plugin("p")

	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := h.Call(ctx, "p", "echo", []byte("x"))
				calls.Add(1)
				if err != nil || string(out) != "x" {
					failures.Add(1)
					if err == nil {
						err = errors.New("wrong output " + string(out))
					}
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for n := range 3 {
		wasm := cVersion
		if n%2 == 1 {
			wasm = reference
		}
		if err := h.Replace(ctx, host.Plugin{Name: "p", Wasm: wasm, Instances: 2, Config: map[string]string{"v": "2"}}); err != nil {
			t.Fatalf("Replace %d: %v", n, err)
		}
	}
	// A broken version is refused and the old one keeps serving.
	err := h.Replace(ctx, host.Plugin{Name: "p", Wasm: []byte("not wasm"), Instances: 2})
	if !errors.Is(err, sandbox.ErrInvalidModule) {
		t.Fatalf("Replace with garbage = %v", err)
	}
	close(stop)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d calls failed during Replace; first: %v", f, calls.Load(), *firstErr.Load())
	}
	after, err := h.Plugin("p")
	if err != nil {
		t.Fatal(err)
	}
	if after.Digest == before.Digest || after.Digest != sandbox.Digest(cVersion) {
		t.Errorf("digest %s → %s, want the C build's", before.Digest, after.Digest)
	}
	if got := call(t, h, "p", "config_get", "v"); got != "2" {
		t.Errorf("config after Replace = %q, want 2", got)
	}
	// The pool size is kept by Replace: changing it is refused, and nothing changes.
	if err := h.Replace(ctx, host.Plugin{Name: "p", Wasm: reference, Instances: 3}); !errors.Is(err, host.ErrInvalidPlugin) {
		t.Errorf("Replace with another pool size = %v", err)
	}
	if err := h.Replace(ctx, host.Plugin{Name: "nope", Wasm: reference}); !errors.Is(err, host.ErrNotFound) {
		t.Errorf("Replace of an unknown plugin = %v", err)
	}
}
