package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
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
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var stops atomic.Int64
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			// The id of the last operation, once it has ended: a stop aimed at it is stale.
			if s := i.state.Load(); s&stMask == stIdle && s>>idShift > 0 {
				i.stop(s>>idShift, stopDeadline)
				stops.Add(1)
			}
		}
	}()
	defer func() {
		close(done)
		wg.Wait()
	}()
	// At least 20,000 calls and 1,000 stale stops, however the two goroutines get scheduled.
	for n := 0; n < 20000 || stops.Load() < 1000; n++ {
		out, err := i.Call(ctx, "echo", []byte("x"))
		if err != nil || string(out) != "x" {
			t.Fatalf("call %d (after %d stale stops): %q, %v", n, stops.Load(), out, err)
		}
		if n%1000 == 999 {
			runtime.Gosched()
		}
		if n > 10_000_000 {
			t.Fatalf("only %d stale stops in %d calls", stops.Load(), n)
		}
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
	i.stopHook = func() {
		close(checked)
		for s := i.state.Load(); s&stMask != stBusy || s>>idShift != id1+1; s = i.state.Load() { // wait for operation 2
			runtime.Gosched()
		}
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
	if out, err := i.Call(ctx, "echo", []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("echo: %q, %v", out, err)
	}
}

// TestGrowthMovesTheBufferTheCallPathReads grows the memory past its capacity with an input
// larger than the input buffer: wazero reallocates the memory through the instance's
// allocator, and the call path must read and write the moved buffer.
func TestGrowthMovesTheBufferTheCallPathReads(t *testing.T) {
	i := refInstance(t, Config{})
	ctx := context.Background()
	before := unsafe.SliceData(i.lm.buf)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than the initial memory
	out, err := i.Call(ctx, "echo", big)
	if err != nil || !bytes.Equal(out, big) {
		t.Fatalf("echo of 1 MiB: %d bytes, %v", len(out), err)
	}
	if unsafe.SliceData(i.lm.buf) == before {
		t.Fatal("the memory did not move: the test proved nothing")
	}
	if got, want := uint64(len(i.lm.buf)), uint64(i.mem.Size()); got != want {
		t.Fatalf("allocator holds %d bytes, wazero's memory is %d", got, want)
	}
	if out, err := i.Call(ctx, "echo", []byte("after")); err != nil || string(out) != "after" {
		t.Fatalf("echo after growth: %q, %v", out, err)
	}
}

// TestAllocator: a growth past the limit returns nil (wazero reports a failed memory.grow)
// and leaves the buffer as it was; growth adds zeroes; release zeroes a buffer and recycles
// it, but drops one that grew past twice the initial capacity.
func TestAllocator(t *testing.T) {
	var pool sync.Pool
	m := linearMemory{pool: &pool}
	lm := m.Allocate(2*65536, 4*65536)
	b := lm.Reallocate(65536)
	b[0], b[65535] = 7, 8
	if got := lm.Reallocate(5 * 65536); got != nil {
		t.Fatalf("growth past the maximum returned %d bytes", len(got))
	}
	b = lm.Reallocate(2 * 65536) // within the capacity
	if len(b) != 2*65536 || b[0] != 7 || b[65535] != 8 || b[65536] != 0 {
		t.Fatalf("growth: len %d, b[0]=%d, b[65535]=%d, b[65536]=%d", len(b), b[0], b[65535], b[65536])
	}
	lm.Free() // wazero's: a no-op, the memory stays readable post mortem
	if m.buf == nil {
		t.Fatal("Free dropped the buffer")
	}
	m.release()
	if m.buf != nil {
		t.Fatal("release kept the buffer")
	}
	if i := bytes.IndexFunc(b[:cap(b)], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("released buffer: byte %d is not zero", i)
	}

	// A buffer that grew past twice the initial capacity is dropped, not zeroed.
	m = linearMemory{pool: &pool}
	g := m.Allocate(65536, 8*65536).Reallocate(4 * 65536)
	g[0] = 9
	m.release()
	if g[0] != 9 {
		t.Fatal("a grown buffer was zeroed for recycling")
	}
}

// TestRecycledMemoryIsClean: an instance writes a marker across its memory and closes; the
// next instance that gets the same buffer back must find no trace of it.
func TestRecycledMemoryIsClean(t *testing.T) {
	ctx := context.Background()
	m := refInstance(t, Config{}).mod
	for range 50 { // sync.Pool may drop a buffer (it does at random under -race): try again
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
		used := unsafe.SliceData(i.lm.buf)
		if err := i.Close(ctx); err != nil {
			t.Fatal(err)
		}
		j, err := m.Instantiate(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		recycled := unsafe.SliceData(j.lm.buf) == used
		if recycled {
			if out, err := j.Call(ctx, "get", nil); err != nil || len(out) != 0 {
				t.Fatalf("marker in the recycled instance: %q, %v", out, err)
			}
			if bytes.Contains(j.lm.buf[:cap(j.lm.buf)], []byte("MARKER-")) {
				t.Fatal("the recycled memory holds the previous instance's bytes")
			}
		}
		if err := j.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if recycled {
			return
		}
	}
	t.Fatal("no buffer was recycled in 50 tries")
}

// TestDeadlineWakesAParkedWatchdog waits until the watchdog has parked (64 idle ticks of
// 100 µs) before each runaway call: the call must wake it and be stopped at its deadline,
// never before.
func TestDeadlineWakesAParkedWatchdog(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine(ctx, WithDeadlineResolution(100*time.Microsecond))
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
		i, err := m.Instantiate(ctx, nil) // its start wakes the watchdog
		if err != nil {
			t.Fatal(err)
		}
		for !e.wd.parked.Load() {
			runtime.Gosched()
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
