package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// refInstance is a fresh instance of the reference plugin on its own engine.
func refInstance(t *testing.T, cfg Config) *Instance {
	t.Helper()
	ctx := context.Background()
	e, err := NewEngine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(ctx) })
	wasm, err := os.ReadFile("../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, wasm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestStaleStopNeverHitsTheNextOperation aims stops at operations that have just ended,
// from another goroutine, while calls follow one another as fast as they can: the stops
// race with leave and enter, and must never interrupt a later call (enter clears the
// interrupt a stale stop left; see stop and clearInterrupt).
func TestStaleStopNeverHitsTheNextOperation(t *testing.T) {
	i := refInstance(t, Config{Limits: Limits{CallTimeout: NoTimeout}})
	ctx := context.Background()
	// The stopper aims a stop at each operation the caller reports ended, while the caller
	// goes on to the next: the stop races with that one's enter and leave. It waits on the
	// reports, so neither goroutine spins, and a full buffer holds the caller back: every
	// call is followed by a stale stop, however the two get scheduled.
	ended := make(chan uint64, 4)
	var wg sync.WaitGroup
	wg.Add(1)
	var stops atomic.Int64
	go func() {
		defer wg.Done()
		for id := range ended {
			i.stop(id, stopDeadline)
			stops.Add(1)
		}
	}()
	for n := range 20000 {
		out, err := i.Call(ctx, "echo", []byte("x"))
		if err != nil || string(out) != "x" {
			t.Errorf("call %d (after %d stale stops): %q, %v", n, stops.Load(), out, err)
			break
		}
		ended <- i.state.Load() >> idShift // the id of the call that just ended
	}
	close(ended)
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := stops.Load(); n != 20000 {
		t.Fatalf("%d stale stops, want 20000", n)
	}
	// A stop aimed at the running operation still works.
	i2 := refInstance(t, Config{Limits: Limits{CallTimeout: 50 * time.Millisecond}})
	if _, err := i2.Call(ctx, "loop", nil); !errors.As(err, new(*DeadlineError)) {
		t.Fatalf("loop: %v, want a DeadlineError", err)
	}
}

// TestStopThatLosesTheRaceIsCleared forces the one interleaving in which a stop writes the
// interrupt global after its operation has ended: stop checks that operation 1 runs, then
// operation 1 ends and operation 2 starts before the write. Operation 2 must run with the
// interrupt clear.
func TestStopThatLosesTheRaceIsCleared(t *testing.T) {
	i := refInstance(t, Config{Limits: Limits{CallTimeout: NoTimeout}})
	ctx := context.Background()
	id1, err := i.enter(ctx, opCall)
	if err != nil {
		t.Fatal(err)
	}
	checked := make(chan struct{})
	entered2 := make(chan struct{}) // operation 2 has published its state word
	i.hook = func(p hookPoint) {
		if p == hookEnter {
			close(entered2)
		}
	}
	i.flags.Or(flagHook)
	i.stopHook = func() {
		close(checked)
		<-entered2 // wait for operation 2
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		i.stop(id1, stopDeadline)
	}()
	<-checked
	i.leave(id1)
	id2, err := i.enter(ctx, opCall) // waits for the stop to finish, then clears
	if err != nil {
		t.Fatal(err)
	}
	<-stopped
	if v := i.intrG.Get(); v != 0 {
		t.Fatalf("operation 2 runs with interrupt = %d", v)
	}
	i.leave(id2)
	i.stopHook = nil
	i.flags.And(^flagHook)
	if out, err := i.Call(ctx, "echo", []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("echo: %q, %v", out, err)
	}
}

// TestGrowthMovesTheBufferTheCallPathReads grows the memory past its initial size with an
// input larger than the input buffer: the call path must read and write the grown buffer,
// which wazero got from the instance's allocator. With a reserved region the buffer must not
// move (the growth is in place); on the heap it moves to a larger copy.
func TestGrowthMovesTheBufferTheCallPathReads(t *testing.T) {
	i := refInstance(t, Config{})
	ctx := context.Background()
	before := unsafe.SliceData(i.lm.buf)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than the initial memory
	out, err := i.Call(ctx, "echo", big)
	if err != nil || !bytes.Equal(out, big) {
		t.Fatalf("echo of 1 MiB: %d bytes, %v", len(out), err)
	}
	if moved := unsafe.SliceData(i.lm.buf) != before; moved == i.lm.r.mapped {
		t.Fatalf("reserved region %v, the memory moved %v", i.lm.r.mapped, moved)
	}
	if i.lm.r.mapped != reservesMemory {
		t.Fatalf("reserved region %v on a platform that reserves %v", i.lm.r.mapped, reservesMemory)
	}
	if got, want := uint64(len(i.lm.buf)), uint64(i.mem.Size()); got != want {
		t.Fatalf("allocator holds %d bytes, wazero's memory is %d", got, want)
	}
	if out, err := i.Call(ctx, "echo", []byte("after")); err != nil || string(out) != "after" {
		t.Fatalf("echo after growth: %q, %v", out, err)
	}
}

// TestAllocator, for both kinds of region: a growth past the limit returns nil (wazero
// reports a failed memory.grow) and leaves the buffer as it was; growth adds zeroes and keeps
// the bytes; release zeroes the memory and recycles it. A reserved region gives back what was
// used above the kept part and stays reserved; a heap buffer that grew past twice its initial
// capacity is dropped, not zeroed.
func TestAllocator(t *testing.T) {
	const page = 65536
	for _, reserved := range []bool{true, false} {
		if reserved && !reservesMemory {
			continue // this platform has no reserved regions; the heap case below still runs
		}
		var pool memPool
		m := linearMemory{pool: &pool}
		lm := m.Allocate(2*page, 64*page)
		if !reserved {
			m.r.free()
			m.r = newRegion(2*page, 0) // a region on the heap, as on other platforms
			m.r.max = 64 * page
		}
		b := lm.Reallocate(page)
		b[0], b[page-1] = 7, 8
		if got := lm.Reallocate(65 * page); got != nil {
			t.Fatalf("reserved %v: growth past the maximum returned %d bytes", reserved, len(got))
		}
		b = lm.Reallocate(16 * page)
		if len(b) != 16*page || cap(b) != len(b) || b[0] != 7 || b[page-1] != 8 || b[page] != 0 || b[16*page-1] != 0 {
			t.Fatalf("reserved %v: growth: len %d cap %d, b[0]=%d, b[page-1]=%d, b[page]=%d, b[end]=%d", reserved, len(b), cap(b), b[0], b[page-1], b[page], b[16*page-1])
		}
		for n := range b {
			b[n] = 0xAA
		}
		lm.Free() // wazero's: a no-op, the memory stays readable post mortem
		if m.buf == nil || m.buf[16*page-1] != 0xAA {
			t.Fatal("Free dropped the buffer")
		}
		r := m.r
		m.release()
		if m.buf != nil || m.r != nil {
			t.Fatal("release kept the buffer")
		}
		if !reserved {
			if len(pool.free) != 0 {
				t.Fatal("a heap buffer that grew past twice its capacity was recycled")
			}
			if b[0] != 0xAA {
				t.Fatal("a dropped heap buffer was zeroed")
			}
			continue
		}
		if len(pool.free) != 1 || pool.free[0] != r {
			t.Fatalf("the region was not recycled: %d pooled", len(pool.free))
		}
		if r.committed != 2*page {
			t.Fatalf("recycled region: %d bytes committed, want the kept %d", r.committed, 2*page)
		}
		if i := bytes.IndexFunc(r.mem[:r.committed], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("recycled region: byte %d is not zero", i)
		}
		// The next instance gets the region back, and what it grows into is zero again.
		m2 := linearMemory{pool: &pool}
		b2 := m2.Allocate(2*page, 64*page).Reallocate(16 * page)
		if m2.r != r {
			t.Fatal("the pooled region was not reused")
		}
		if i := bytes.IndexFunc(b2, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("reused region: byte %d is not zero", i)
		}
		pool.close()
		m2.release()
		if len(pool.free) != 0 || r.mapped {
			t.Fatal("a region released into a closed pool was kept")
		}
	}
}

// TestRecycledMemoryIsClean: an instance writes a marker across its memory and closes; the
// next instance that gets the same region back must find no trace of it.
func TestRecycledMemoryIsClean(t *testing.T) {
	ctx := context.Background()
	m := refInstance(t, Config{}).mod
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := i.Call(ctx, "set", []byte("MARKER-0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Call(ctx, "echo", bytes.Repeat([]byte("MARKER-"), 9000)); err != nil { // fills the input buffer
		t.Fatal(err)
	}
	if _, err := i.Call(ctx, "echo", bytes.Repeat([]byte("MARKER-"), 300000)); err != nil { // grows the memory to 2 MiB
		t.Fatal(err)
	}
	used := i.lm.r
	if err := i.Close(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.lm.r != used {
		t.Fatal("the memory was not recycled")
	}
	if out, err := j.Call(ctx, "get", nil); err != nil || len(out) != 0 {
		t.Fatalf("marker in the recycled instance: %q, %v", out, err)
	}
	if bytes.Contains(j.lm.buf, []byte("MARKER-")) {
		t.Fatal("the recycled memory holds the previous instance's bytes")
	}
	if _, err := j.Call(ctx, "echo", bytes.Repeat([]byte{0}, 3<<20)); err != nil { // grows past what i used
		t.Fatal(err)
	}
	if bytes.Contains(j.lm.buf, []byte("MARKER-")) {
		t.Fatal("the recycled memory, grown again, holds the previous instance's bytes")
	}
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDeadlineWakesAParkedWatchdog waits until the watchdog has parked (64 idle ticks of
// 100 µs) before each runaway call: the call must wake it and be stopped at its deadline,
// never before.
func TestDeadlineWakesAParkedWatchdog(t *testing.T) {
	ctx := context.Background()
	parked := make(chan struct{}, 1) // a token each time the watchdog parks
	e, err := NewEngine(ctx, WithDeadlineResolution(100*time.Microsecond), withParkHook(func() {
		select {
		case parked <- struct{}{}:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(ctx) })
	wasm, err := os.ReadFile("../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 20 * time.Millisecond
	m, err := e.Compile(ctx, wasm, Config{Limits: Limits{CallTimeout: limit}})
	if err != nil {
		t.Fatal(err)
	}
	for n := range 10 {
		select { // a token from before the start: the watchdog parked then, and the start woke it
		case <-parked:
		default:
		}
		i, err := m.Instantiate(ctx, nil) // its start wakes the watchdog
		if err != nil {
			t.Fatal(err)
		}
		for { // until it has parked with no wake-up pending (a token can predate the start's)
			select {
			case <-parked:
			case <-time.After(30 * time.Second): // bounds a hang only
				t.Fatalf("round %d: the watchdog never parked", n)
			}
			if e.wd.Idle() {
				break
			}
		}
		done := make(chan error, 1)
		start := time.Now()
		go func() { _, err := i.Call(ctx, "loop", nil); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrDeadline) {
				t.Fatalf("round %d: %v, want a deadline", n, err)
			}
			if d := time.Since(start); d < limit {
				t.Fatalf("round %d: stopped after %v, before its %v deadline", n, d, limit)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the runaway call was never stopped", n)
		}
		_ = i.Close(ctx)
	}
}
