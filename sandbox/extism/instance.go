package extism

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
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
	"github.com/wasmvisor/wasmvisor/sandbox/internal/lifecycle"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Operation kinds, in the state word (see package lifecycle).
const (
	opCall uint8 = iota
	opConfigure
)

// Why the watchdog or Kill stopped a call.
const (
	stopDeadline    = watchdog.StopDeadline
	stopCtxDeadline = watchdog.StopCtxDeadline
	stopCanceled    = watchdog.StopCanceled
	stopKilled      = watchdog.StopKilled
)

// Instance is one Extism plugin instance: its own memory, kernel, vars and config.
//
// It serves one call at a time: a call or Configure entered while another runs returns
// sandbox.ErrBusy at once. Kill and Close may be called from any goroutine at any time. After
// a fatal error (see sandbox.Fatal) every call returns that error again.
type Instance struct {
	mod  *Module
	p    *sdk.Plugin
	out  *output   // stdout, stderr and log, metered
	dirs io.Closer // the granted directories, closed with the instance

	state   atomic.Uint64 // the lifecycle word: state, operation kind and id
	failure atomic.Pointer[failure]
	killed  atomic.Bool
	calls   atomic.Uint64

	op watchdog.Op // the call's published context and the watchdog's notes: see watch

	stops lifecycle.Stop // which call was stopped, and why
	wde   watchdog.Entry // the instance's place in the watchdog's lists
	wake  chan struct{}  // cuts a real sleep short when the call is stopped

	exited        atomic.Bool // a module of the instance was closed by the guest
	exitCode      atomic.Uint32
	closing       atomic.Bool
	refused       atomic.Bool                  // a memory growth was refused during this call
	kernelRefused atomic.Bool                  // … in the kernel's memory: input, output or a var was lost
	mem           atomic.Pointer[linearMemory] // the memory allocated last: the plugin's own
	host          hostState                    // its host functions' failure and panics
	kernel        kernel                       // the kernel's functions, looked up once
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
	i := &Instance{mod: m, wake: make(chan struct{}, 1)}
	i.out = i.newOutput()
	mc, dirs, err := m.cfg.Capabilities.InstanceConfig(m.base, i.out.stdoutW, i.out.stderrW, i.sleep)
	if err != nil {
		m.unref(ctx)
		return nil, err
	}
	i.dirs = dirs
	sctx := ctx
	if m.cfg.Limits.StartTimeout != sandbox.NoTimeout {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, m.cfg.Limits.StartTimeout)
		defer cancel()
	}
	sctx = context.WithValue(sctx, startKey{}, i)
	sctx = experimental.WithMemoryAllocator(sctx, experimental.MemoryAllocatorFunc(i.allocate))
	sctx = experimental.WithCloseNotifier(sctx, experimental.CloseNotifyFunc(i.closeNotify))
	p, err := m.cp.Instance(sctx, sdk.PluginInstanceConfig{ModuleConfig: mc})
	if err != nil {
		_ = i.dirs.Close()
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
	m.plugins.Store(p, i)
	m.wd.Add(&i.wde, (*watched)(i))
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
//
// The call's deadline and the caller's context are enforced by the watchdog (see watch) and
// the guest's safe points (see safePoints): the SDK's runtime does not watch contexts, so no
// timer or goroutine is made for the call. Host functions get the caller's context.
func (i *Instance) CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error) {
	id, err := i.enter(ctx, opCall)
	if err != nil {
		return dst, err
	}
	defer i.leave(id)
	n := i.calls.Add(1)
	if on := i.mod.cfg.OnCall; on != nil && n&(1<<min(i.mod.cfg.CallSampling, 31)-1) == 0 {
		t0 := time.Now()
		defer func() { on(time.Since(t0)) }()
	}
	if !i.mod.callable[handler] {
		return dst, fmt.Errorf("extism: handler %q: %w", handler, sandbox.ErrUnknownHandler)
	}
	timeout := i.mod.cfg.Limits.CallTimeout
	done := ctx.Done()
	if done != nil { // published for the watchdog; wazero itself does not watch it
		i.op.Arm(ctx, id)
	}
	// The watchdog stores parked (and an idle instance's cold flag) before it reads the state
	// words; we published ours before reading them: either it sees this call, or we wake it.
	if done != nil || timeout != sandbox.NoTimeout {
		i.mod.wd.Entered(&i.wde)
	}
	i.refused.Store(false)
	i.kernelRefused.Store(false)
	if i.callHook != nil {
		i.callHook()
	}

	rc, out, err := i.p.CallWithContext(context.WithValue(ctx, kernelKey{}, &i.kernel), handler, input)

	if done != nil {
		i.op.Disarm()
	}
	i.out.endCall()

	if err := i.classify(ctx, id, timeout, handler, rc, err); err != nil {
		return dst, err
	}
	if i.exited.Load() { // exit(0): the SDK's success, but the module is closed
		i.fail(&sandbox.ExitError{Code: i.exitCode.Load()})
	}
	return append(dst, out...), nil
}

// classify turns what the SDK returned into the package's errors, and records a fatal one.
func (i *Instance) classify(ctx context.Context, id uint64, timeout time.Duration, handler string, rc uint32, err error) error {
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
	case i.stops.Is(id): // the plugin was closed under the call: whatever the SDK says
		return fatal(i.stopError(ctx, handler, timeout))
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
		return fatal(sandbox.ParseTrap(strings.TrimPrefix(err.Error(), "failed to initialize runtime: ")))
	case i.kernelRefused.Load():
		// The SDK ignores a failed kernel allocation: the guest saw a truncated input, or
		// the output or a var was dropped. The result cannot be trusted.
		return fatal(errors.New("extism: the kernel could not grow its memory for input, output or vars"))
	case rc != 0 && !i.exited.Load():
		return &sandbox.GuestError{Status: abi.StatusError, Message: fmt.Sprintf("returned %d", rc)}
	}
	return nil
}

// stopError is the error of a call stopped by the watchdog.
func (i *Instance) stopError(ctx context.Context, handler string, timeout time.Duration) error {
	switch i.stops.Why() {
	case stopCtxDeadline:
		dl, _ := ctx.Deadline()
		return &sandbox.DeadlineError{Op: "call", Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true}
	case stopCanceled:
		return fmt.Errorf("extism: call %q: %w: %w", handler, sandbox.ErrCanceled, context.Canceled)
	case stopKilled:
		return fmt.Errorf("extism: call %q: instance killed: %w", handler, sandbox.ErrCanceled)
	}
	return &sandbox.DeadlineError{Op: "call", Timeout: timeout.String()}
}

// Configure replaces the config map that the next calls read through config_get. Extism has
// no change callback, so the guest is not told and cannot reject it.
func (i *Instance) Configure(ctx context.Context, config map[string]string) error {
	id, err := i.enter(ctx, opConfigure)
	if err != nil {
		return err
	}
	defer i.leave(id)
	c := maps.Clone(config)
	if c == nil {
		c = map[string]string{}
	}
	i.p.Config = c
	return nil
}

// enter moves an idle instance to busy for an operation of kind, and returns its id. An
// instance that has ended returns a *sandbox.UnavailableError; a context that has ended, a
// *sandbox.NotEnteredError.
func (i *Instance) enter(ctx context.Context, kind uint8) (uint64, error) {
	s := i.state.Load()
	id := lifecycle.ID(s) + 1
	if lifecycle.State(s) != lifecycle.Idle || !i.state.CompareAndSwap(s, lifecycle.BusyWord(id, kind)) {
		return 0, i.unavailable()
	}
	if f := i.failure.Load(); f != nil { // killed or retired
		i.leave(id)
		return 0, &sandbox.UnavailableError{Err: f.err}
	}
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			i.leave(id)
			return 0, &sandbox.NotEnteredError{Op: opNames[kind], Err: err}
		}
	}
	return id, nil
}

var opNames = [...]string{opCall: "call", opConfigure: "configure"}

// leave ends operation id: back to idle, unless the instance failed meanwhile.
func (i *Instance) leave(id uint64) {
	busy := i.state.Load()
	if i.failure.Load() != nil {
		i.state.CompareAndSwap(busy, busy&^lifecycle.Mask|lifecycle.Failed)
		return
	}
	i.state.CompareAndSwap(busy, lifecycle.IdleWord(id))
	if i.failure.Load() != nil { // failed (killed) meanwhile
		i.state.CompareAndSwap(lifecycle.IdleWord(id), lifecycle.IdleWord(id)|lifecycle.Failed)
	}
}

func (i *Instance) unavailable() error {
	switch lifecycle.State(i.state.Load()) {
	case lifecycle.Busy:
		return sandbox.ErrBusy
	case lifecycle.Failed:
		return &sandbox.UnavailableError{Err: i.failure.Load().err}
	case lifecycle.Idle:
		return sandbox.ErrBusy // lost a race with another caller
	}
	return &sandbox.UnavailableError{Err: fmt.Errorf("extism: instance: %w", sandbox.ErrClosed)}
}

// watched is an Instance as the watchdog sees it, so that Instance exports no Watch method.
type watched Instance

func (w *watched) Watch(now time.Duration) bool { return (*Instance)(w).watch(now) }

// watch is called by the watchdog on its goroutine, on every tick while it is awake, with the
// time since its epoch; it reports whether the instance runs a call that needs watching, and
// stops one past its deadline or whose context is done, as the sandbox's (watchdog.Op.Check).
func (i *Instance) watch(now time.Duration) bool {
	s := i.state.Load()
	if lifecycle.State(s) != lifecycle.Busy || lifecycle.Kind(s) != opCall {
		return false
	}
	id := lifecycle.ID(s)
	limit := i.mod.cfg.Limits.CallTimeout
	why, watched := i.op.Check(now, id, limit, limit != sandbox.NoTimeout)
	if why != watchdog.StopNone {
		i.stop(id, why)
	}
	return watched
}

// stop stops call id, if it still runs. It records the reason and the id; the guest's next
// safe point (within wasmbin.Fuel units of work) sees them and traps (see safePoints), and a
// real sleep is cut short. The call reads the id when the SDK returns: a call that finishes
// after stop recorded it reports the stop and ends the instance, even if no safe point cut it
// (it ran past its deadline all the same); one that returned before keeps its result.
func (i *Instance) stop(id uint64, reason uint32) {
	if !i.stops.Mark(id, reason) {
		return
	}
	select {
	case i.wake <- struct{}{}:
	default:
	}
	i.cancelHostFunc() // a host function in progress: its context ends
}

// callStopped reports whether the call in progress has been stopped.
func (i *Instance) callStopped() bool {
	return i.stops.Running(i.state.Load())
}

// stopFromContext stops the call in progress because ctx, the caller's, has ended, as the
// watchdog would on its next tick: a host function that returned the context's error must
// not be reported as failing.
func (i *Instance) stopFromContext(ctx context.Context) {
	s := i.state.Load()
	if lifecycle.State(s) != lifecycle.Busy {
		return
	}
	switch err := ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		i.stop(lifecycle.ID(s), stopCtxDeadline)
	case err != nil:
		i.stop(lifecycle.ID(s), stopCanceled)
	}
}

// fail records the fatal error that ends the instance; the first one wins.
func (i *Instance) fail(err error) {
	i.failure.CompareAndSwap(nil, &failure{err: err})
	if s := i.state.Load(); lifecycle.State(s) == lifecycle.Idle {
		i.state.CompareAndSwap(s, s|lifecycle.Failed)
	}
}

// Err returns the fatal error that ended the instance, sandbox.ErrClosed after Close, or nil
// while it is usable.
func (i *Instance) Err() error {
	if lifecycle.State(i.state.Load()) == lifecycle.Closed {
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
	s := lifecycle.State(i.state.Load())
	return s == lifecycle.Failed || s == lifecycle.Closed
}

// Calls is the number of calls that have entered the instance, including one in progress.
func (i *Instance) Calls() uint64 { return i.calls.Load() }

// Kill stops the instance from any goroutine: a call in progress is interrupted (its plugin
// is closed under it) and returns an error matching sandbox.ErrCanceled, and the instance is
// never entered again. Close it afterwards.
func (i *Instance) Kill() {
	if i.killed.Swap(true) {
		return
	}
	i.fail(fmt.Errorf("extism: instance killed: %w", sandbox.ErrCanceled))
	if s := i.state.Load(); lifecycle.State(s) == lifecycle.Busy && lifecycle.Kind(s) == opCall {
		i.stop(lifecycle.ID(s), stopKilled)
	}
}

// Close frees the instance. A call in progress is interrupted first and Close waits, within
// ctx, for it to return. Close is idempotent.
func (i *Instance) Close(ctx context.Context) error {
	i.Kill()
	var poll *time.Ticker
	for {
		s := i.state.Load()
		st := lifecycle.State(s)
		if st == lifecycle.Closed {
			return nil
		}
		if st != lifecycle.Busy && i.state.CompareAndSwap(s, s&^lifecycle.Mask|lifecycle.Closed) {
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
	i.mod.wd.Remove(&i.wde)
	i.mod.plugins.Delete(i.p)
	i.closing.Store(true)
	err := i.p.Close(context.Background())
	i.out.stdoutW.Flush()
	i.out.stderrW.Flush()
	i.out.scope.Flush()
	_ = i.dirs.Close()
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
	if i.stopped() { // a guest that sleeps in a loop reaches its next safe point at once
		return
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-i.wake:
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
