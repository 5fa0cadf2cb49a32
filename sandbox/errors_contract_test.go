package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// sentinels are the errors the package doc promises every returned error wraps (a GuestError
// matches ErrGuest).
var sentinels = []error{
	sandbox.ErrInvalidModule, sandbox.ErrABI, sandbox.ErrTrap, sandbox.ErrDeadline,
	sandbox.ErrMemoryLimit, sandbox.ErrExit, sandbox.ErrABIViolation, sandbox.ErrCanceled,
	sandbox.ErrClosed, sandbox.ErrBusy, sandbox.ErrRetired, sandbox.ErrUnknownHandler,
	sandbox.ErrGuest, sandbox.ErrReadBudget, sandbox.ErrInvalidConfig, sandbox.ErrNotEntered,
}

// endedCtx is a context whose deadline passes when the test says so, not when a clock does:
// Err is nil until end, then context.DeadlineExceeded.
type endedCtx struct {
	context.Context
	done  chan struct{}
	ended atomic.Bool
	once  sync.Once
}

func newEndedCtx() *endedCtx {
	return &endedCtx{Context: context.Background(), done: make(chan struct{})}
}

func (c *endedCtx) end() { c.once.Do(func() { c.ended.Store(true); close(c.done) }) }

func (c *endedCtx) Deadline() (time.Time, bool) { return time.Unix(0, 0), true }
func (c *endedCtx) Done() <-chan struct{}       { return c.done }
func (c *endedCtx) Err() error {
	if c.ended.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// whileRunning calls handler on i with ctx and, once the call has entered, runs during; it
// returns the call's error.
func whileRunning(t *testing.T, i *sandbox.Instance, ctx context.Context, handler string, during func()) error {
	t.Helper()
	res := startCall(t, ctx, i, handler)
	during()
	return <-res
}

// TestErrorContract walks every error path of the exported API that a test can reach and
// checks that the error wraps one of the documented sentinels (the one the path documents),
// that it has the documented type, and whether it is Fatal.
func TestErrorContract(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	ref := func(t *testing.T, l sandbox.Limits) *sandbox.Instance {
		return instantiate(t, compile(t, e, referencePath, sandbox.Config{Limits: l}), nil)
	}
	noTimeout := sandbox.Limits{CallTimeout: sandbox.NoTimeout}
	is := func(target any) func(error) bool {
		return func(err error) bool { return errors.As(err, target) }
	}
	for _, c := range []struct {
		name  string
		run   func(t *testing.T) error
		want  error            // the sentinel the path documents
		typed func(error) bool // the documented type, if any
		fatal bool             // whether the error ends the instance
		also  []error          // further errors it must match (the context's)
		check func(t *testing.T, err error)
	}{
		{name: "engine: bad deadline resolution", want: sandbox.ErrInvalidConfig, run: func(t *testing.T) error {
			_, err := sandbox.NewEngine(context.Background(), sandbox.WithDeadlineResolution(-1))
			return err
		}},
		{name: "compile: malformed module", want: sandbox.ErrInvalidModule, typed: is(new(*sandbox.ModuleError)), run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), []byte("not wasm"), sandbox.Config{})
			return err
		}},
		{name: "compile: ABI errors", want: sandbox.ErrABI, typed: is(new(*sandbox.ABIError)), run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), read(t, "testdata/noabi.wasm"), sandbox.Config{})
			return err
		}},
		{name: "compile: memory limit above 4 GiB", want: sandbox.ErrInvalidConfig, run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), read(t, referencePath), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 65537}})
			return err
		}},
		{name: "compile: memory minimum above the limit", want: sandbox.ErrMemoryLimit, typed: is(new(*sandbox.MemoryLimitError)), fatal: true, run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), read(t, goPluginPath), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 1}})
			return err
		}},
		{name: "compile: relative guest path", want: sandbox.ErrInvalidConfig, run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), read(t, capsPath), sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: t.TempDir(), Guest: "data"}}}})
			return err
		}},
		{name: "compile: unknown clock", want: sandbox.ErrInvalidConfig, run: func(t *testing.T) error {
			_, err := e.Compile(context.Background(), read(t, referencePath), sandbox.Config{Capabilities: sandbox.Capabilities{Clock: 99}})
			return err
		}},
		{name: "instantiate: a granted directory gone", want: sandbox.ErrInvalidConfig, also: []error{os.ErrNotExist}, run: func(t *testing.T) error {
			dir := filepath.Join(t.TempDir(), "grant")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			m := compile(t, e, capsPath, sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: dir, Guest: "/data"}}}})
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			_, err := m.Instantiate(context.Background(), nil)
			return err
		}},
		{name: "instantiate: start deadline", want: sandbox.ErrDeadline, typed: is(new(*sandbox.DeadlineError)), fatal: true, also: []error{context.DeadlineExceeded}, run: func(t *testing.T) error {
			m := compile(t, e, "testdata/hang.wasm", sandbox.Config{Limits: sandbox.Limits{StartTimeout: time.Millisecond}})
			_, err := m.Instantiate(context.Background(), nil)
			return err
		}},
		{name: "instantiate: context ended before start", want: sandbox.ErrNotEntered, typed: is(new(*sandbox.NotEnteredError)), also: []error{context.Canceled}, run: func(t *testing.T) error {
			m := compile(t, e, referencePath, sandbox.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := m.Instantiate(ctx, nil)
			return err
		}},
		{name: "instantiate: closed module", want: sandbox.ErrClosed, run: func(t *testing.T) error {
			m := compile(t, e, referencePath, sandbox.Config{})
			_ = m.Close(context.Background())
			_, err := m.Instantiate(context.Background(), nil)
			return err
		}},
		{name: "call: trap", want: sandbox.ErrTrap, typed: is(new(*sandbox.TrapError)), fatal: true, run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{}).Call(context.Background(), "trap", nil)
			return err
		}},
		{name: "call: deadline", want: sandbox.ErrDeadline, typed: is(new(*sandbox.DeadlineError)), fatal: true, also: []error{context.DeadlineExceeded}, run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{CallTimeout: time.Millisecond}).Call(context.Background(), "loop", nil)
			return err
		}, check: func(t *testing.T, err error) {
			if sandbox.CallerEnded(err) {
				t.Errorf("the instance's own deadline is a caller end: %v", err)
			}
		}},
		{name: "call: caller deadline", want: sandbox.ErrDeadline, typed: is(new(*sandbox.DeadlineError)), fatal: true, also: []error{context.DeadlineExceeded}, run: func(t *testing.T) error {
			ctx := newEndedCtx()
			return whileRunning(t, ref(t, noTimeout), ctx, "loop", ctx.end)
		}, check: func(t *testing.T, err error) {
			if !sandbox.CallerEnded(err) {
				t.Errorf("not a caller end: %v", err)
			}
		}},
		{name: "call: cancel", want: sandbox.ErrCanceled, fatal: true, also: []error{context.Canceled}, run: func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			return whileRunning(t, ref(t, noTimeout), ctx, "loop", cancel)
		}, check: func(t *testing.T, err error) {
			if !sandbox.CallerEnded(err) {
				t.Errorf("not a caller end: %v", err)
			}
		}},
		{name: "call: kill", want: sandbox.ErrCanceled, fatal: true, run: func(t *testing.T) error {
			i := ref(t, noTimeout)
			return whileRunning(t, i, context.Background(), "loop", i.Kill)
		}},
		{name: "call: busy", want: sandbox.ErrBusy, run: func(t *testing.T) error {
			i := ref(t, noTimeout)
			var busy error
			_ = whileRunning(t, i, context.Background(), "loop", func() {
				_, busy = i.Call(context.Background(), "echo", nil)
				i.Kill()
			})
			return busy
		}},
		{name: "call: memory limit", want: sandbox.ErrMemoryLimit, typed: is(new(*sandbox.MemoryLimitError)), fatal: true, run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{MemoryPages: 16}).Call(context.Background(), "grow", nil)
			return err
		}},
		{name: "call: exit", want: sandbox.ErrExit, typed: is(new(*sandbox.ExitError)), fatal: true, run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{}).Call(context.Background(), "exit", []byte("3"))
			return err
		}},
		{name: "call: ABI violation", want: sandbox.ErrABIViolation, typed: is(new(*sandbox.ViolationError)), fatal: true, run: func(t *testing.T) error {
			_, err := instantiate(t, compile(t, e, miniPath, sandbox.Config{}), nil).Call(context.Background(), "badout", nil)
			return err
		}},
		{name: "call: unknown handler", want: sandbox.ErrUnknownHandler, run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{}).Call(context.Background(), "no_such_handler", nil)
			return err
		}},
		{name: "call: guest error", want: sandbox.ErrGuest, typed: is(new(*sandbox.GuestError)), run: func(t *testing.T) error {
			_, err := ref(t, sandbox.Limits{}).Call(context.Background(), "fail", []byte("no"))
			return err
		}},
		{name: "call: context ended before entry", want: sandbox.ErrNotEntered, typed: is(new(*sandbox.NotEnteredError)), also: []error{context.DeadlineExceeded}, run: func(t *testing.T) error {
			ctx := newEndedCtx()
			ctx.end()
			_, err := ref(t, sandbox.Limits{}).Call(ctx, "echo", nil)
			return err
		}},
		{name: "configure: context ended before entry", want: sandbox.ErrNotEntered, typed: is(new(*sandbox.NotEnteredError)), also: []error{context.Canceled}, run: func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ref(t, sandbox.Limits{}).Configure(ctx, map[string]string{"k": "v"})
		}},
		{name: "deliver: context ended before entry", want: sandbox.ErrNotEntered, typed: is(new(*sandbox.NotEnteredError)), also: []error{context.Canceled}, run: func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ref(t, sandbox.Limits{}).Deliver(ctx, "t", nil)
		}},
		{name: "call: retired", want: sandbox.ErrRetired, typed: is(new(*sandbox.UnavailableError)), run: func(t *testing.T) error {
			i := ref(t, sandbox.Limits{})
			i.Retire()
			_, err := i.Call(context.Background(), "echo", nil)
			return err
		}},
		{name: "call: closed", want: sandbox.ErrClosed, typed: is(new(*sandbox.UnavailableError)), run: func(t *testing.T) error {
			i := ref(t, sandbox.Limits{})
			_ = i.Close(context.Background())
			_, err := i.Call(context.Background(), "echo", nil)
			return err
		}},
		{name: "call: after a fatal error", want: sandbox.ErrTrap, typed: is(new(*sandbox.UnavailableError)), fatal: true, run: func(t *testing.T) error {
			i := ref(t, sandbox.Limits{})
			_, _ = i.Call(context.Background(), "trap", nil)
			_, err := i.Call(context.Background(), "echo", nil)
			return err
		}},
		{name: "store read: violation", want: sandbox.ErrABIViolation, typed: is(new(*sandbox.ViolationError)), fatal: true, run: func(t *testing.T) error {
			g := newStoreGuest(t, e)
			g.u32(ctrlAddr+abi.CtrlMetricsPtr, img)
			g.u32(ctrlAddr+abi.CtrlMetricsCount, abi.MaxMetrics+1)
			_, err := g.i.Telemetry()
			return err
		}},
		{name: "store read: budget", want: sandbox.ErrReadBudget, run: func(t *testing.T) error {
			g := newStoreGuest(t, e)
			enc := abi.AppendConfig(nil, map[string]string{"k": strings.Repeat("v", 5000)})
			g.poke(img, enc)
			g.u32(ctrlAddr+abi.CtrlConfigPtr, img)
			g.u32(ctrlAddr+abi.CtrlConfigLen, uint32(len(enc)))
			_, err := g.i.AppliedConfigWithin(&sandbox.Budget{Bytes: 4096, Records: 10})
			return err
		}},
		{name: "store read: closed", want: sandbox.ErrClosed, run: func(t *testing.T) error {
			i := ref(t, sandbox.Limits{})
			_ = i.Close(context.Background())
			_, err := i.Events(0)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			documented := false
			for _, s := range sentinels {
				documented = documented || errors.Is(err, s)
			}
			if !documented {
				t.Fatalf("%v (%T) wraps none of the documented sentinels", err, err)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("%v (%T) does not wrap %v", err, err, c.want)
			}
			if c.typed != nil && !c.typed(err) {
				t.Errorf("%v (%T) is not of the documented type", err, err)
			}
			for _, a := range c.also {
				if !errors.Is(err, a) {
					t.Errorf("%v does not match %v", err, a)
				}
			}
			if got := sandbox.Fatal(err); got != c.fatal {
				t.Errorf("Fatal(%v) = %v, want %v", err, got, c.fatal)
			}
			if c.check != nil {
				c.check(t, err)
			}
		})
	}
}
