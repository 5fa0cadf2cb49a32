package faults_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// deadlineTimeout is the hostile plugin's call timeout in the deadline tests.
const deadlineTimeout = 200 * time.Millisecond

// How late past its timeout a call ends is not asserted here: the machine running the suite
// is shared (two CPUs, other jobs, the race detector), and speed is measured by benchmarks
// (BENCHMARKS.md, "deadlines: how late a runaway call ends", BenchmarkDeadlineOvershoot). What proves the deadline held
// is an event, not a clock: each handler runs for ever, so a call that returns at all was
// stopped, and a *DeadlineError that is not the caller's (the test's own 30 s context) says the
// plugin's own timeout stopped it. Before the bulk instructions paid for their length and the
// host functions checked the interrupt, these calls ran until the caller's context ended.

// deadlineModules are the hostile modules of this category: each "run" handler does, for
// ever, one kind of work that a count of loop heads alone does not bound.
var deadlineModules = []struct {
	name     string
	memBytes int64 // the guest memory it uses
}{
	{"deadline_fill", 32 << 20},      // a loop of one memory.fill over 32 MiB
	{"deadline_copy", 32 << 20},      // a loop of one overlapping memory.copy over 32 MiB
	{"deadline_table", 8 << 20},      // table.grow to a million references, table.fill over them
	{"deadline_grow", 4 << 20},       // memory.grow churn
	{"deadline_recurse", 64 << 10},   // a tree of calls with no loop: 2^60 calls
	{"deadline_write", 33 << 20},     // one fd_write of 32 MiB to stdout
	{"deadline_hostcalls", 64 << 10}, // log and publish as fast as it can
}

// TestDeadlineHoldsForEveryInstruction calls each hostile module's handler under a
// 200 ms timeout while the healthy plugin is called without pause, and requires: a
// *DeadlineError of that timeout (not of the caller's context); the healthy plugin answering
// correctly throughout; the successor answering; resident memory within three times the
// guest's memory (the instance, its successor and a recycled buffer) plus 128 MiB (the race
// detector's shadow memory and the garbage collector's slack). What it catches is a host that
// allocates without bound for a guest (before the table cap, this module could make wazero
// allocate 32 GiB of references).
func TestDeadlineHoldsForEveryInstruction(t *testing.T) {
	for _, m := range deadlineModules {
		t.Run(m.name, func(t *testing.T) {
			h := newHost(t, crashy()...)
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, m.name),
				Limits: sandbox.Limits{CallTimeout: deadlineTimeout, MemoryPages: 1024}})
			withinMemory(t, 3*m.memBytes+128<<20, func() {
				whileHealthy(t, h, func() {
					for range 2 { // the second call runs on the successor
						start := time.Now()
						_, err := h.Call(ctxT(t), "hostile", "run", nil)
						took := time.Since(start)
						var de *sandbox.DeadlineError
						if !errors.Is(err, sandbox.ErrDeadline) || !errors.As(err, &de) || de.Caller {
							t.Fatalf("call = %v, want a *sandbox.DeadlineError of the plugin's own timeout", err)
						}
						t.Logf("ended after %v (timeout %v)", took.Round(time.Millisecond), deadlineTimeout)
					}
				})
			})
			if _, err := h.Call(ctxT(t), "hostile", "ok", nil); err != nil {
				t.Fatalf("the successor: %v", err)
			}
			checkHealthy(t, h)
		})
	}
}

// TestCloseStopsAGuestInABulkInstruction closes the host while a call with no timeout
// spins in memory.fill or memory.copy over 32 MiB: Close must end it, without ErrLeak,
// within the supervisor's shutdown timeout (a stop first lets a call in flight finish, for
// supervisor.DefaultShutdown, then kills it) plus deadlineSlack, and the call must return an
// error matching sandbox.ErrCanceled. Before the bulk instructions paid for their length,
// the kill never reached the guest and Close reported leaked instances.
func TestCloseStopsAGuestInABulkInstruction(t *testing.T) {
	for _, name := range []string{"deadline_fill", "deadline_copy"} {
		t.Run(name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			core := zapcore.RegisterHooks(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
				zapcore.AddSync(io.Discard), zapcore.DebugLevel), func(e zapcore.Entry) error {
				if e.Message == "guest log" {
					select {
					case started <- struct{}{}:
					default:
					}
				}
				return nil
			})
			h := newHost(t, host.WithLogger(zap.New(core)))
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, name),
				Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout, MemoryPages: 1024}})
			done := make(chan error, 1)
			go func() {
				_, err := h.Call(context.Background(), "hostile", "run", nil)
				done <- err
			}()
			select {
			case <-started: // the guest logged: it is in its loop
			case <-ctxT(t).Done():
				t.Fatal("the hostile call never started")
			}
			// The bound catches a Close that hangs on the guest; how fast Close is, is not asserted.
			ctx, cancel := context.WithTimeout(context.Background(), supervisor.DefaultShutdown+30*time.Second)
			defer cancel()
			start := time.Now()
			if err := h.Close(ctx); err != nil {
				t.Fatalf("Close = %v after %v, want nil (no ErrLeak, no timeout)", err, time.Since(start))
			}
			select {
			case err := <-done:
				if !errors.Is(err, sandbox.ErrCanceled) && !errors.Is(err, host.ErrClosed) {
					t.Errorf("the call = %v, want an error matching sandbox.ErrCanceled", err)
				}
			case <-ctxT(t).Done():
				t.Fatal("the hostile call did not return after Close")
			}
			t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
		})
	}
}
