package sandbox_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// interruptArgumentWazero is the wazero version whose compiler RATIONALE.md's argument for
// the interrupt global was made against ("Why a plain store stops the guest").
const interruptArgumentWazero = "v1.12.0"

// TestInterruptArgumentIsForThisWazero pins that argument: the watchdog stops a guest with
// wazero's MutableGlobal.Set, a plain store, which the compiled code on another thread
// reads. Whether that is sound depends on how this wazero version stores the global and
// how its compiler loads it, on amd64 and arm64 only. When wazero or the platform changes,
// this test fails until someone re-reads the compiler and updates the argument.
func TestInterruptArgumentIsForThisWazero(t *testing.T) {
	version := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				version = d.Version
				if d.Replace != nil {
					version = d.Replace.Path + "@" + d.Replace.Version
				}
			}
		}
	}
	if version == "" { // test binaries carry no dependency list: read go.mod
		for line := range strings.Lines(string(read(t, "../go.mod"))) {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "github.com/tetratelabs/wazero" {
				version = f[1]
			}
			if len(f) >= 3 && f[0] == "replace" && f[1] == "github.com/tetratelabs/wazero" {
				version = "replaced: " + strings.Join(f[2:], " ")
			}
		}
	}
	if version != interruptArgumentWazero {
		t.Fatalf("wazero is %q; RATIONALE.md's argument that MutableGlobal.Set from the watchdog stops a guest "+
			"running on another thread was made for wazero %s. Re-read the new version (how SetGlobalValue stores, "+
			"whether the compiler caches global.get across the slow function's call), update the argument, "+
			"then this constant", version, interruptArgumentWazero)
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Fatalf("GOARCH %s: the argument covers amd64 and arm64, where wazero compiles; elsewhere it "+
			"interprets, and the interpreter's read of the global must be argued anew", runtime.GOARCH)
	}
}

// TestInterruptFromAnotherGoroutine is the argument's behaviour on this platform: a guest
// spinning in a loop, instrumented, on one goroutine, is stopped by MutableGlobal.Set(1) on
// another, with bare wazero (no watchdog, no context). If the compiled code kept the global
// in a register, or the store were never seen, the loop would spin on and the test would
// fail at its timeout.
func TestInterruptFromAnotherGoroutine(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	started := make(chan struct{}, 1)
	if _, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func() { started <- struct{}{} }).Export("started").Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := wasmbin.Parse(read(t, "testdata/spin.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := wasmbin.Instrument(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	intr := mod.ExportedGlobal(wasmbin.ExportInterrupt).(api.MutableGlobal)
	for round := range 20 { // the instance stays usable after the trap: spin again
		intr.Set(0)
		done := make(chan error, 1)
		go func() {
			_, err := mod.ExportedFunction("spin").Call(ctx)
			done <- err
		}()
		<-started
		intr.Set(1) // from this goroutine, while the guest runs on the other
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("round %d: spin = %v, want the unreachable trap", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the guest did not see the interrupt set from another goroutine", round)
		}
	}
}

// TestHostFunctionsStopWithTheCall: a guest stopped while it is inside a host function
// (here one fd_write of 32 MiB to stdout, which the instance's writer passes on in 64 KiB
// pieces) leaves it promptly, with the call's *DeadlineError. The logger makes each line of
// output cost about a millisecond of CPU (a slow log sink), so that the whole write, 8,192
// lines of 4 KiB, takes seconds: without the pieces and their check, the call ends only when
// the write does.
func TestHostFunctionsStopWithTheCall(t *testing.T) {
	var lines atomic.Int64
	work := make([]byte, 4096)
	core := zapcore.RegisterHooks(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard), zapcore.DebugLevel), func(zapcore.Entry) error {
		lines.Add(1)
		for range 300 {
			sum := sha256.Sum256(work)
			work[0] = sum[0]
		}
		return nil
	})
	e := newEngine(t, sandbox.WithLogger(zap.New(core)))
	const timeout = 100 * time.Millisecond
	m := compile(t, e, "../internal/faults/testdata/deadline_write.wasm",
		sandbox.Config{Limits: sandbox.Limits{CallTimeout: timeout, MemoryPages: 1024,
			Output: sandbox.OutputLimits{CallBytes: sandbox.Unlimited, CallLines: sandbox.Unlimited,
				SecondBytes: sandbox.Unlimited, SecondLines: sandbox.Unlimited}}})
	i := instantiate(t, m, nil)
	start := time.Now()
	_, err := i.Call(context.Background(), "run", nil)
	took := time.Since(start)
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) {
		t.Fatalf("call = %v, want a *DeadlineError", err)
	}
	// Cut short, not timed: a host function that ignored the stop would log all 8192 lines
	// (several seconds of work) before the guest trapped at its deadline.
	if n := lines.Load(); n >= 8192 {
		t.Fatalf("the call logged all %d lines in %v: the host function was not stopped (timeout %v)", n, took, timeout)
	}
	t.Logf("stopped after %v and %d of 8192 lines", took.Round(time.Millisecond), lines.Load())
}
