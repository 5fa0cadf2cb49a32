package extism

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Instance states.
const (
	stIdle uint32 = iota
	stBusy
	stFailed
	stClosed
)

// Instance is one Extism plugin instance: its own memory, kernel, vars and config.
//
// It serves one call at a time: a call or Configure entered while another runs returns
// sandbox.ErrBusy at once. Kill and Close may be called from any goroutine at any time. After
// a fatal error (see sandbox.Fatal) every call returns that error again.
type Instance struct {
	mod   *Module
	p     *sdk.Plugin
	out   *output    // stdout, stderr and log, metered
	roots []*os.Root // the granted directories, closed with the instance

	state   atomic.Uint32
	failure atomic.Pointer[failure]
	killed  atomic.Bool
	calls   atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc // of the call in progress; guarded by mu

	done          atomic.Pointer[<-chan struct{}] // the call's Done, for an interruptible real sleep
	exited        atomic.Bool                     // a module of the instance was closed by the guest
	exitCode      atomic.Uint32
	closing       atomic.Bool
	refused       atomic.Bool                  // a memory growth was refused during this call
	kernelRefused atomic.Bool                  // … in the kernel's memory: input, output or a var was lost
	mem           atomic.Pointer[linearMemory] // the memory allocated last: the plugin's own
	host          hostState                    // its host functions' failure and panics
	callHook      func()                       // tests only: called as a call is about to run the guest
}

type failure struct{ err error }

// Instantiate makes a fresh instance with config as its Extism config map. Instantiation is
// bounded by Limits.StartTimeout. A context that has ended already gives a
// *sandbox.NotEnteredError, as the sandbox's does: nothing is started.
func (m *Module) Instantiate(ctx context.Context, config map[string]string) (*Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, &sandbox.NotEnteredError{Op: "start", Err: err}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("extism: module: %w", sandbox.ErrClosed)
	}
	m.refs++
	m.mu.Unlock()
	i := &Instance{mod: m}
	i.out = i.newOutput()
	mc, roots, err := openDirs(m.cfg.Capabilities, m.base.WithStdout(i.out.stdoutW).WithStderr(i.out.stderrW))
	if err != nil {
		m.unref(ctx)
		return nil, err
	}
	i.roots = roots
	if m.cfg.Capabilities.Clock == sandbox.ClockReal {
		mc = mc.WithNanosleep(i.sleep)
	}
	sctx := ctx
	if m.cfg.Limits.StartTimeout != sandbox.NoTimeout {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, m.cfg.Limits.StartTimeout)
		defer cancel()
	}
	sctx = experimental.WithMemoryAllocator(sctx, experimental.MemoryAllocatorFunc(i.allocate))
	sctx = experimental.WithCloseNotifier(sctx, experimental.CloseNotifyFunc(i.closeNotify))
	p, err := m.cp.Instance(sctx, sdk.PluginInstanceConfig{ModuleConfig: mc})
	if err != nil {
		closeRoots(i.roots)
		m.unref(ctx)
		switch {
		case sctx.Err() != nil && ctx.Err() == nil:
			return nil, &sandbox.DeadlineError{Op: "start", Timeout: m.cfg.Limits.StartTimeout.String()}
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			dl, _ := ctx.Deadline()
			return nil, &sandbox.DeadlineError{Op: "start", Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("extism: start: %w: %w", sandbox.ErrCanceled, context.Canceled)
		case i.refused.Load():
			return nil, &sandbox.MemoryLimitError{LimitPages: m.cfg.Limits.MemoryPages, Cause: err}
		}
		return nil, &sandbox.ModuleError{Reason: "instantiate: " + err.Error(), Err: err}
	}
	p.SetLogger(i.log)
	p.Config = maps.Clone(config)
	if p.Config == nil {
		p.Config = map[string]string{}
	}
	i.p = p
	m.insts.Store(p, i)
	return i, nil
}

func (m *Module) unref(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs--
	_ = m.release(ctx)
}

// Handlers lists the plugin's handlers, as Module.Handlers.
func (i *Instance) Handlers() []string { return i.mod.Handlers() }

// MemoryPages is the current size of the plugin's linear memory in 64 KiB pages (not
// counting the Extism kernel's memory).
func (i *Instance) MemoryPages() uint32 {
	if lm := i.mem.Load(); lm != nil {
		return lm.pages.Load()
	}
	return 0
}

// Call runs handler with input and returns a copy of the output.
func (i *Instance) Call(ctx context.Context, handler string, input []byte) ([]byte, error) {
	return i.CallAppend(ctx, handler, input, nil)
}

// CallAppend is Call appending the output to dst.
func (i *Instance) CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error) {
	if err := i.enter(ctx, "call"); err != nil {
		return dst, err
	}
	defer i.leave()
	n := i.calls.Add(1)
	if on := i.mod.cfg.OnCall; on != nil && n&(1<<min(i.mod.cfg.CallSampling, 31)-1) == 0 {
		t0 := time.Now()
		defer func() { on(time.Since(t0)) }()
	}
	if !i.mod.callable[handler] {
		return dst, fmt.Errorf("extism: handler %q: %w", handler, sandbox.ErrUnknownHandler)
	}
	timeout := i.mod.cfg.Limits.CallTimeout
	var cctx context.Context
	var cancel context.CancelFunc
	if timeout == sandbox.NoTimeout {
		cctx, cancel = context.WithCancel(ctx)
	} else {
		cctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	i.mu.Lock()
	i.cancel = cancel
	i.mu.Unlock()
	if i.killed.Load() { // Kill ran before it could see cancel
		cancel()
	}
	d := cctx.Done()
	i.done.Store(&d)
	i.refused.Store(false)
	i.kernelRefused.Store(false)
	if i.callHook != nil {
		i.callHook()
	}

	rc, out, err := i.p.CallWithContext(cctx, handler, input)

	i.done.Store(nil)
	i.mu.Lock()
	i.cancel = nil
	i.mu.Unlock()
	i.out.endCall()

	if err := i.classify(ctx, cctx, timeout, handler, rc, err); err != nil {
		return dst, err
	}
	if i.exited.Load() { // exit(0): the SDK's success, but the module is closed
		i.fail(&sandbox.ExitError{Code: i.exitCode.Load()})
	}
	return append(dst, out...), nil
}

// classify turns what the SDK returned into the package's errors, and records a fatal one.
func (i *Instance) classify(ctx, cctx context.Context, timeout time.Duration, handler string, rc uint32, err error) error {
	fatal := func(e error) error {
		if i.refused.Load() && !errors.Is(e, sandbox.ErrCanceled) && !errors.Is(e, sandbox.ErrDeadline) {
			e = &sandbox.MemoryLimitError{LimitPages: i.mod.cfg.Limits.MemoryPages, Cause: e}
		}
		i.fail(e)
		return e
	}
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case i.killed.Load():
		return fatal(fmt.Errorf("extism: call %q: instance killed: %w", handler, sandbox.ErrCanceled))
	case err != nil && cctx.Err() != nil && closedByContext(err, exit):
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			dl, _ := ctx.Deadline()
			return fatal(&sandbox.DeadlineError{Op: "call", Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true})
		case ctx.Err() != nil:
			return fatal(fmt.Errorf("extism: call %q: %w: %w", handler, sandbox.ErrCanceled, context.Canceled))
		}
		return fatal(&sandbox.DeadlineError{Op: "call", Timeout: timeout.String()})
	case err != nil && i.host.failed.Load() != nil:
		return fatal(i.host.failed.Load())
	case i.exited.Load() && (err != nil || i.exitCode.Load() != 0):
		return fatal(&sandbox.ExitError{Code: i.exitCode.Load()})
	case isExit && exit.ExitCode() != 0:
		return fatal(&sandbox.ExitError{Code: exit.ExitCode()})
	case err != nil:
		if msg := i.p.GetErrorWithContext(context.Background()); msg != "" && msg == err.Error() {
			return &sandbox.GuestError{Status: abi.StatusError, Message: msg}
		}
		return fatal(trapOf(err.Error()))
	case i.kernelRefused.Load():
		// The SDK ignores a failed kernel allocation: the guest saw a truncated input, or
		// the output or a var was dropped. The result cannot be trusted.
		return fatal(errors.New("extism: the kernel could not grow its memory for input, output or vars"))
	case rc != 0 && !i.exited.Load():
		return &sandbox.GuestError{Status: abi.StatusError, Message: fmt.Sprintf("returned %d", rc)}
	}
	return nil
}

// closedByContext reports an error of wazero's close-on-context-done.
func closedByContext(err error, exit *sys.ExitError) bool {
	if exit != nil {
		return exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled
	}
	return strings.Contains(err.Error(), "module closed with context")
}

// Configure replaces the config map that the next calls read through config_get. Extism has
// no change callback, so the guest is not told and cannot reject it.
func (i *Instance) Configure(ctx context.Context, config map[string]string) error {
	if err := i.enter(ctx, "configure"); err != nil {
		return err
	}
	defer i.leave()
	c := maps.Clone(config)
	if c == nil {
		c = map[string]string{}
	}
	i.p.Config = c
	return nil
}

// enter moves an idle instance to busy for operation op. An instance that has ended returns a
// *sandbox.UnavailableError; a context that has ended, a *sandbox.NotEnteredError.
func (i *Instance) enter(ctx context.Context, op string) error {
	if !i.state.CompareAndSwap(stIdle, stBusy) {
		return i.unavailable()
	}
	if f := i.failure.Load(); f != nil { // killed or retired
		i.leave()
		return &sandbox.UnavailableError{Err: f.err}
	}
	if err := ctx.Err(); err != nil {
		i.leave()
		return &sandbox.NotEnteredError{Op: op, Err: err}
	}
	return nil
}

func (i *Instance) leave() {
	if i.failure.Load() != nil {
		i.state.CompareAndSwap(stBusy, stFailed)
		return
	}
	i.state.CompareAndSwap(stBusy, stIdle)
	if i.failure.Load() != nil { // failed (killed) meanwhile
		i.state.CompareAndSwap(stIdle, stFailed)
	}
}

func (i *Instance) unavailable() error {
	switch i.state.Load() {
	case stBusy:
		return sandbox.ErrBusy
	case stFailed:
		return &sandbox.UnavailableError{Err: i.failure.Load().err}
	case stIdle:
		return sandbox.ErrBusy // lost a race with another caller
	}
	return &sandbox.UnavailableError{Err: fmt.Errorf("extism: instance: %w", sandbox.ErrClosed)}
}

// fail records the fatal error that ends the instance; the first one wins.
func (i *Instance) fail(err error) {
	i.failure.CompareAndSwap(nil, &failure{err: err})
	i.state.CompareAndSwap(stIdle, stFailed)
}

// Err returns the fatal error that ended the instance, sandbox.ErrClosed after Close, or nil
// while it is usable.
func (i *Instance) Err() error {
	if i.state.Load() == stClosed {
		return fmt.Errorf("extism: instance: %w", sandbox.ErrClosed)
	}
	if f := i.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// Retire ends the instance gracefully: at once if it is idle, else when the call in progress
// returns (which it does normally). Either way the instance is never entered again: later
// calls get an error matching sandbox.ErrRetired. Retire reports whether the instance has
// ended already: no call is running and Close will not wait.
func (i *Instance) Retire() bool {
	i.fail(fmt.Errorf("extism: instance: %w", sandbox.ErrRetired))
	s := i.state.Load()
	return s == stFailed || s == stClosed
}

// Calls is the number of calls that have entered the instance, including one in progress.
func (i *Instance) Calls() uint64 { return i.calls.Load() }

// Kill stops the instance from any goroutine: a call in progress is interrupted (wazero
// closes the module when the call's context is cancelled) and returns an error matching
// sandbox.ErrCanceled, and the instance is never entered again. Close it afterwards.
func (i *Instance) Kill() {
	if i.killed.Swap(true) {
		return
	}
	i.fail(fmt.Errorf("extism: instance killed: %w", sandbox.ErrCanceled))
	i.mu.Lock()
	if i.cancel != nil {
		i.cancel()
	}
	i.mu.Unlock()
}

// Close frees the instance. A call in progress is interrupted first and Close waits, within
// ctx, for it to return. Close is idempotent.
func (i *Instance) Close(ctx context.Context) error {
	i.Kill()
	var poll *time.Ticker
	for {
		s := i.state.Load()
		if s == stClosed {
			return nil
		}
		if s != stBusy && i.state.CompareAndSwap(s, stClosed) {
			break
		}
		if poll == nil {
			poll = time.NewTicker(100 * time.Microsecond)
			defer poll.Stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("extism: close: the call in progress did not return: %w", ctx.Err())
		case <-poll.C:
		}
	}
	i.closing.Store(true)
	i.mod.insts.Delete(i.p)
	err := i.p.Close(context.Background())
	i.out.stdoutW.Flush()
	i.out.stderrW.Flush()
	i.out.scope.Flush()
	closeRoots(i.roots)
	i.mod.unref(ctx)
	return err
}

// closeNotify is wazero's notice that a module of the instance is being closed: by the
// guest's proc_exit, by a context, or by Close.
func (i *Instance) closeNotify(_ context.Context, code uint32) {
	if i.closing.Load() || i.exited.Load() {
		return
	}
	i.exitCode.Store(code)
	i.exited.Store(true)
}

// sleep is WASI's sleep with ClockReal, cut short when the call is stopped.
func (i *Instance) sleep(ns int64) {
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	var done <-chan struct{}
	if d := i.done.Load(); d != nil {
		done = *d
	}
	select {
	case <-t.C:
	case <-done:
	}
}

// log receives the guest's Extism log calls.
func (i *Instance) log(level sdk.LogLevel, msg string) {
	lvl := zapcore.InfoLevel
	switch level {
	case sdk.LogLevelTrace, sdk.LogLevelDebug:
		lvl = zapcore.DebugLevel
	case sdk.LogLevelWarn:
		lvl = zapcore.WarnLevel
	case sdk.LogLevelError:
		lvl = zapcore.ErrorLevel
	}
	if !i.mod.logger.Core().Enabled(lvl) {
		return
	}
	keep := min(len(msg), guestio.MaxLine)
	if !i.out.log.Take(int64(keep), int64(len(msg))) { // within Limits.Output, as the sandbox's log
		return
	}
	if keep < len(msg) {
		i.out.truncated.Add(1)
	}
	if ce := i.mod.logger.Check(lvl, "guest log"); ce != nil {
		ce.Write(zap.String("message", msg[:keep]), zap.String("level", level.String()))
	}
}

// trapOf turns wazero's trap message into a sandbox.TrapError, as the sandbox does.
func trapOf(msg string) *sandbox.TrapError {
	first, k, stack := guestio.Trap(strings.TrimPrefix(msg, "failed to initialize runtime: "))
	t := &sandbox.TrapError{Kind: sandbox.TrapOther, Message: first, Stack: stack}
	if k != "" {
		t.Message = k
		switch kind := sandbox.TrapKind(k); kind {
		case sandbox.TrapUnreachable, sandbox.TrapOutOfBounds, sandbox.TrapDivideByZero, sandbox.TrapIntegerOverflow,
			sandbox.TrapInvalidConv, sandbox.TrapStackOverflow, sandbox.TrapTableAccess, sandbox.TrapIndirectCall:
			t.Kind = kind
		}
	}
	return t
}
