package sandbox

import (
	"bytes"
	"context"
	"os"
	"testing"
)

func snapModule(t *testing.T, opts ...Option) *Module {
	t.Helper()
	ctx := context.Background()
	e, err := NewEngine(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(ctx) })
	wasm, err := os.ReadFile("../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, wasm, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(ctx) })
	return m
}

// TestSnapshotCopied: where the image cannot be mapped it is copied, with the same
// isolation: a marker stays in its instance, and a recycled memory is clean.
func TestSnapshotCopied(t *testing.T) {
	ctx := context.Background()
	m := snapModule(t, withCopiedImages())
	a, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.snap.Load(); s == nil || s.fd != -1 || a.lm.r.img != nil {
		t.Fatal("the snapshot is mapped, or missing")
	}
	if _, err := a.Call(ctx, "set", []byte("MARKER-a")); err != nil {
		t.Fatal(err)
	}
	// A second live instance takes a new region, whose memory restore must commit before it
	// copies the image (see imageWillCover).
	c, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.snap.Load(); !c.lm.fresh || !bytes.Equal(c.lm.buf[:s.size], s.data) {
		t.Fatalf("a new region (%v) does not hold the image", c.lm.fresh)
	}
	if out, err := c.Call(ctx, "get", nil); err != nil || len(out) != 0 {
		t.Fatalf("marker in a live neighbour: %q, %v", out, err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	used := a.lm.r
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if b.lm.r != used {
		t.Fatal("the memory was not recycled")
	}
	if out, err := b.Call(ctx, "get", nil); err != nil || len(out) != 0 {
		t.Fatalf("marker in the next instance: %q, %v", out, err)
	}
	if bytes.Contains(b.lm.buf, []byte("MARKER-")) {
		t.Fatal("the recycled memory holds the previous instance's bytes")
	}
}

// TestForeignImageIsUnmapped: a pooled region that maps a snapshot's image, handed to a
// memory that does not restore that snapshot, is zero again (the image is replaced by fresh
// reserved space), as when an instance starts while the snapshot is being taken.
func TestForeignImageIsUnmapped(t *testing.T) {
	if !reservesMemory {
		t.Skip("images are copied on this platform")
	}
	ctx := context.Background()
	m := snapModule(t, withMappedImages(), WithRecycling(false)) // the region goes back to the pool
	a, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := a.lm.r
	if img.img == nil {
		t.Fatal("the snapshot is not mapped")
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lm := linearMemory{pool: &m.mems}
	limit := uint64(m.cfg.Limits.MemoryPages) * 65536
	lm.Allocate(65536, limit)
	if lm.r != img {
		t.Fatal("the pooled region was not reused")
	}
	if lm.r.img != nil {
		t.Fatal("the image is still mapped")
	}
	size := m.snap.Load().size
	if b := lm.Reallocate(size); b == nil || !bytes.Equal(b, make([]byte, size)) {
		t.Fatal("the region is not zero")
	}
	lm.release()

	// The next restored instance maps the image again.
	c, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if c.lm.r.img == nil {
		t.Fatal("the image was not mapped again")
	}
	if out, err := c.Call(ctx, "echo", []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("echo: %q, %v", out, err)
	}
}
