package host_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// A closed host keeps almost nothing reachable: testing keeps every cleanup (and so every
// host hosttest made) reachable until the test binary ends, and a few hundred tests that each
// load a Go plugin must not add up to gigabytes.
func TestClosedHostReleasesMemory(t *testing.T) {
	wasm, err := os.ReadFile("../plugins/authz/authz.wasm")
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	kept := make([]*host.Host, 0, n)
	open := func() *host.Host {
		h, err := host.New(ctxT(t), host.WithCacheDir(hosttest.CacheDir()))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Load(ctxT(t), host.Plugin{Name: "authz", Wasm: wasm}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Call(ctxT(t), "authz", "evaluate", []byte(`{"subject":{"id":"alice","roles":["admin"]},"action":"read","resource":{"type":"doc","id":"x","owner":"bob"}}`)); err != nil {
			t.Fatal(err)
		}
		if err := h.Close(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return h
	}
	kept = append(kept, open()) // warm: the first load fills caches that outlive a host
	before := heapAlloc()
	for range n {
		kept = append(kept, open())
	}
	after := heapAlloc()
	per := (int64(after) - int64(before)) / n
	t.Logf("heap kept per closed host: %d bytes", per)
	if per > 1<<20 {
		t.Fatalf("a closed host keeps %d bytes of heap reachable; want at most %d", per, 1<<20)
	}
	runtime.KeepAlive(kept)
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Hosts given one engine share its compiled code and nothing else: closing one leaves the
// other serving, closing both leaves the engine to its owner, and an option that would give
// one host a cache or deadline resolution of its own is refused.
func TestSharedEngine(t *testing.T) {
	ctx := ctxT(t)
	e, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(hosttest.CacheDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	if _, err := host.New(ctx, host.WithEngine(e), host.WithDeadlineResolution(time.Millisecond)); !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Fatalf("WithEngine and WithDeadlineResolution: %v, want ErrInvalidConfig", err)
	}
	a, err := host.New(ctx, host.WithEngine(e))
	if err != nil {
		t.Fatal(err)
	}
	b, err := host.New(ctx, host.WithEngine(e))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*host.Host{a, b} {
		if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference, Config: map[string]string{"greeting": fmt.Sprintf("%p", h)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := call(t, b, "ref", "echo", "still here"); got != "still here" {
		t.Fatalf("echo after the other host closed = %q", got)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The engine is still open: its owner can compile on it.
	m, err := e.Compile(ctx, reference, sandbox.Config{})
	if err != nil {
		t.Fatalf("compile after both hosts closed: %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
