//go:build linux && (amd64 || arm64)

package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// The memory accounting tests read the process's resident set from /proc, and its peak
// (VmHWM), reset before each measured step through /proc/self/clear_refs, so that no sampling
// is needed. They do not run in parallel with other tests.

const osPage = 4096

// procStatus returns a field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeak settles the Go heap and resets the peak resident set; it returns the resident
// set, the base of what follows.
func resetPeak(t *testing.T) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("resetting the peak resident set: %v", err)
	}
	return procStatus(t, "VmRSS")
}

// resident counts b's pages that are in memory.
func resident(t *testing.T, b []byte) int {
	t.Helper()
	if len(b) == 0 {
		return 0
	}
	vec := make([]byte, (len(b)+osPage-1)/osPage)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func hogModule(t *testing.T, pages uint32) *Module {
	t.Helper()
	ctx := context.Background()
	e, err := NewEngine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(ctx) })
	wasm, err := os.ReadFile("../internal/faults/testdata/memory_hog.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, wasm, Config{Limits: Limits{MemoryPages: pages, CallTimeout: NoTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(ctx) })
	return m
}

// slack is what the process may add to an instance's memory while these tests measure: the
// Go heap's own growth and the runtime's.
const slack = 16 << 20

// TestMemoryStaysWithinItsLimit: an instance that grows to its limit, 256 MiB, touching every
// page, keeps the process's peak resident set within the limit plus slack; closing it gives
// the memory back to the operating system.
func TestMemoryStaysWithinItsLimit(t *testing.T) {
	const limit = 4096 // pages
	ctx := context.Background()
	m := hogModule(t, limit)
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := resetPeak(t)
	if _, err := i.Call(ctx, "fill", nil); !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("fill: %v, want ErrMemoryLimit", err)
	}
	if got, want := resident(t, i.lm.buf), (limit-16)<<16/osPage; got < want { // it grows 16 pages at a time
		t.Fatalf("%d pages of the memory are resident, want at least %d: the test proved nothing", got, want)
	}
	if peak := procStatus(t, "VmHWM") - base; peak > limit<<16+slack {
		t.Fatalf("the resident set peaked %d MiB above its base, limit %d MiB + %d MiB", peak>>20, limit>>4, slack>>20)
	}
	r := i.lm.r
	if err := i.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, kept := resident(t, r.mem), int(r.committed/osPage); got > kept {
		t.Fatalf("after Close, %d pages of the recycled memory are resident; it keeps %d", got, kept)
	}
	if grew := procStatus(t, "VmRSS") - base; grew > slack {
		t.Fatalf("after Close the resident set is still %d MiB above its base", grew>>20)
	}
}

// TestRecyclingTouchesOnlyUsedPages: closing an instance touches no page the guest did not
// use, and gives back every used page above the part kept for the next instance, which finds
// it all zero.
func TestRecyclingTouchesOnlyUsedPages(t *testing.T) {
	ctx := context.Background()

	// The reference plugin's `grow` handler grows its memory to the limit, 256 MiB, touching
	// nothing, then traps: neither the growth nor the close may bring those pages in.
	ref := refInstance(t, Config{Limits: Limits{CallTimeout: NoTimeout}})
	base := resetPeak(t)
	if _, err := ref.Call(ctx, "grow", nil); !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("grow: %v, want ErrMemoryLimit", err)
	}
	if n := len(ref.lm.buf); n < (DefaultMemoryPages-16)<<16 { // it grows 16 pages at a time
		t.Fatalf("the memory grew to %d bytes, want about the limit: the test proved nothing", n)
	}
	if err := ref.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if peak := procStatus(t, "VmHWM") - base; peak > slack {
		t.Fatalf("growing 256 MiB untouched and closing it raised the resident set by %d MiB", peak>>20)
	}

	// The hog grows by 64 pages and touches them: 65 pages used, 1 kept.
	m := hogModule(t, 4096)
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := i.Call(ctx, "grow", binary.LittleEndian.AppendUint32(nil, 64))
	if err != nil || binary.LittleEndian.Uint32(out) != 65 {
		t.Fatalf("grow 64: %x, %v", out, err)
	}
	r := i.lm.r
	if got := resident(t, r.mem); got < 64<<16/osPage {
		t.Fatalf("%d pages resident after touching 64 Wasm pages: the test proved nothing", got)
	}
	if err := i.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := resident(t, r.mem); got > 1<<16/osPage {
		t.Fatalf("after Close %d pages are resident; only the initial Wasm page is kept (%d)", got, 1<<16/osPage)
	}
	j, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close(ctx)
	if j.lm.r != r {
		t.Fatal("the memory was not recycled")
	}
	if got := resident(t, r.mem[1<<16:]); got != 0 {
		t.Fatalf("%d pages above the kept one are resident in the recycled memory", got)
	}
	out, err = j.Call(ctx, "dirty", nil)
	if err != nil || len(out) != 8 || binary.LittleEndian.Uint32(out) != 1 || binary.LittleEndian.Uint32(out[4:]) != 0 {
		t.Fatalf("the recycled memory: %x, %v; want 1 page, 0 words not zero", out, err)
	}
}
