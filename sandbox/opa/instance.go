package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/lifecycle"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Operation kinds, in the state word (see package lifecycle).
const (
	opCall uint8 = iota
	opConfigure
)

var opNames = [...]string{opCall: "call", opConfigure: "configure"}

// maxMessage bounds what is read of an opa_abort or opa_println message.
const maxMessage = 4 << 10

// Instance is one instance of an OPA policy: its own memory, heap and data document.
//
// It serves one operation at a time: a call or Configure entered while another runs returns
// sandbox.ErrBusy at once. Kill, Retire, Err, Calls, Stats and MemoryPages may be called from
// any goroutine at any time; Close once the last operation has returned (it interrupts one
// in progress and waits for it, within its context). After a fatal error (sandbox.Fatal)
// every call returns that error again.
type Instance struct {
	mod *Module
	g   api.Module
	fn  exports

	evalNow time.Time       // the evaluation's instant, for the host builtins (builtinContext)
	callCtx context.Context // the call's context, for granted host functions (grantedBuiltin)

	data     []byte // the data document in force, as JSON
	dataAddr uint32 // its parsed value in the guest
	base     uint32 // the heap pointer before the data was parsed
	heap     uint32 // the heap pointer after: restored before each evaluation

	state     atomic.Uint64 // the lifecycle word: state, operation kind and id
	failure   atomic.Pointer[failure]
	killed    atomic.Bool
	calls     atomic.Uint64
	decisions []atomic.Uint64 // per entrypoint, by Module.epSlot
	starting  bool            // Instantiate runs: safe points watch its context
	op        watchdog.Op
	stops     lifecycle.Stop // which call was stopped, and why
	wde       watchdog.Entry
	abortMsg  atomic.Pointer[string] // the guest's opa_abort message, during a call
	pages     atomic.Uint32          // the memory's size after the last operation
	out       *output                // opa_println, metered

	cfgMu  sync.Mutex
	config map[string]string // the last config accepted
}

type failure struct{ err error }

// exports are the guest's functions, looked up once.
type exports struct {
	malloc, heapGet, heapSet, jsonParse, dump api.Function
	eval                                      api.Function // opa_eval, ABI 1.2+, or nil
	ctxNew, ctxInput, ctxData, ctxEntry       api.Function
	evalCtx, ctxResult                        api.Function
}

// code is a Module as a sandbox.Code.
type code struct{ *Module }

func (c code) Instantiate(ctx context.Context, config map[string]string) (sandbox.Runner, error) {
	return c.Module.Instantiate(ctx, config)
}

// Instantiate makes a fresh instance with config's data document (ConfigData), bounded by
// Limits.StartTimeout. A context that has ended already gives a *sandbox.NotEnteredError. A
// data document that is not valid JSON is sandbox.ErrInvalidConfig.
func (m *Module) Instantiate(ctx context.Context, config map[string]string) (*Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, &sandbox.NotEnteredError{Op: "start", Err: err}
	}
	data, err := m.dataOf(config)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("opa: module: %w", sandbox.ErrClosed)
	}
	m.refs++
	m.mu.Unlock()
	i := &Instance{mod: m, starting: true, config: maps.Clone(config), decisions: make([]atomic.Uint64, len(m.metricNames))}
	i.out = i.newOutput()
	sctx := ctx
	if m.cfg.Limits.StartTimeout != sandbox.NoTimeout {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, m.cfg.Limits.StartTimeout)
		defer cancel()
	}
	sctx = context.WithValue(sctx, instKey{}, i)
	fail := func(err error) (*Instance, error) {
		if i.g != nil {
			_ = i.g.Close(context.Background())
		}
		m.unref(ctx)
		switch {
		case sctx.Err() != nil && ctx.Err() == nil:
			return nil, &sandbox.DeadlineError{Op: "start", Timeout: m.cfg.Limits.StartTimeout.String()}
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			dl, _ := ctx.Deadline()
			return nil, &sandbox.DeadlineError{Op: "start", Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("opa: start: %w: %w", sandbox.ErrCanceled, context.Canceled)
		}
		return nil, err
	}
	g, err := m.rt.InstantiateModule(sctx, m.cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return fail(i.classify(err, "start"))
	}
	i.g = g
	if err := i.lookup(); err != nil {
		return fail(err)
	}
	if i.base, err = i.call1(sctx, i.fn.heapGet); err != nil {
		return fail(i.classify(err, "start"))
	}
	if err := i.loadData(sctx, data); err != nil {
		return fail(err)
	}
	i.starting = false
	i.notePages()
	m.wd.Add(&i.wde, (*watched)(i))
	return i, nil
}

// dataOf returns the data document of config; without one, the bundle's, or {}. Invalid JSON
// is sandbox.ErrInvalidConfig.
func (m *Module) dataOf(config map[string]string) ([]byte, error) {
	d, ok := config[ConfigData]
	if !ok || d == "" {
		if m.bundleData != nil {
			return m.bundleData, nil
		}
		return []byte("{}"), nil
	}
	if !json.Valid([]byte(d)) {
		return nil, fmt.Errorf("opa: config %q: not valid JSON: %w", ConfigData, sandbox.ErrInvalidConfig)
	}
	return []byte(d), nil
}

func (i *Instance) lookup() error {
	get := func(name string, need bool) (api.Function, error) {
		f := i.g.ExportedFunction(name)
		if f == nil && need {
			return nil, &sandbox.ModuleError{Reason: fmt.Sprintf("OPA export %q missing", name)}
		}
		return f, nil
	}
	var err error
	for _, e := range []struct {
		f    *api.Function
		name string
	}{{&i.fn.malloc, "opa_malloc"}, {&i.fn.heapGet, "opa_heap_ptr_get"}, {&i.fn.heapSet, "opa_heap_ptr_set"},
		{&i.fn.jsonParse, "opa_json_parse"}, {&i.fn.dump, "opa_json_dump"}} {
		if *e.f, err = get(e.name, true); err != nil {
			return err
		}
	}
	if i.fn.eval == nil && i.starting {
		i.fn.eval, _ = get("opa_eval", false)
	}
	if i.fn.eval != nil {
		return nil
	}
	for _, e := range []struct {
		f    *api.Function
		name string
	}{{&i.fn.ctxNew, "opa_eval_ctx_new"}, {&i.fn.ctxInput, "opa_eval_ctx_set_input"}, {&i.fn.ctxData, "opa_eval_ctx_set_data"},
		{&i.fn.ctxEntry, "opa_eval_ctx_set_entrypoint"}, {&i.fn.evalCtx, "eval"}, {&i.fn.ctxResult, "opa_eval_ctx_get_result"}} {
		if *e.f, err = get(e.name, true); err != nil {
			return err
		}
	}
	return nil
}

// loadData parses data into the guest from the base of the heap, and saves the heap
// pointer after it.
func (i *Instance) loadData(ctx context.Context, data []byte) error {
	if _, err := i.fn.heapSet.Call(ctx, uint64(i.base)); err != nil {
		return i.classify(err, "data")
	}
	v, err := i.parse(ctx, data)
	if err != nil {
		return err
	}
	if v == 0 {
		return fmt.Errorf("opa: config %q: the policy could not parse it: %w", ConfigData, sandbox.ErrInvalidConfig)
	}
	heap, err := i.call1(ctx, i.fn.heapGet)
	if err != nil {
		return i.classify(err, "data")
	}
	i.data, i.dataAddr, i.heap = data, v, heap
	return nil
}

// parse copies doc into the guest (opa_malloc) and parses it (opa_json_parse): the value's
// address, 0 if the guest could not parse it.
func (i *Instance) parse(ctx context.Context, doc []byte) (uint32, error) {
	addr, err := i.call1(ctx, i.fn.malloc, uint64(len(doc)))
	if err != nil {
		return 0, i.classify(err, "malloc")
	}
	if !i.g.Memory().Write(addr, doc) {
		return 0, i.fail(&sandbox.ViolationError{Reason: "opa_malloc returned a block out of memory"})
	}
	v, err := i.call1(ctx, i.fn.jsonParse, uint64(addr), uint64(len(doc)))
	if err != nil {
		return 0, i.classify(err, "json_parse")
	}
	return v, nil
}

func (i *Instance) call1(ctx context.Context, f api.Function, args ...uint64) (uint32, error) {
	r, err := f.Call(ctx, args...)
	if err != nil {
		return 0, err
	}
	if len(r) != 1 {
		return 0, &sandbox.ModuleError{Reason: fmt.Sprintf("%s returns %d values, not 1", f.Definition().Name(), len(r))}
	}
	return uint32(r[0]), nil
}

// call calls export with no argument, for discover.
func (i *Instance) call(ctx context.Context, export string) (uint32, error) {
	f := i.g.ExportedFunction(export)
	if f == nil {
		return 0, &sandbox.ModuleError{Reason: fmt.Sprintf("OPA export %q missing", export)}
	}
	v, err := i.call1(context.WithValue(ctx, instKey{}, i), f)
	if err != nil {
		return 0, i.classify(err, export)
	}
	return v, nil
}

// dumpValue serialises value addr (opa_json_dump) and returns a copy of the JSON.
func (i *Instance) dumpValue(ctx context.Context, addr uint32) ([]byte, error) {
	s, err := i.call1(context.WithValue(ctx, instKey{}, i), i.fn.dump, uint64(addr))
	if err != nil {
		return nil, i.classify(err, "json_dump")
	}
	b, err := i.cstring(s, 0)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// cstring returns the guest's NUL-terminated string at addr, as a view of its memory, read
// at most to the end of the memory (bounded by Limits.MemoryPages), or max bytes if max > 0.
func (i *Instance) cstring(addr uint32, max int) ([]byte, error) {
	mem := i.g.Memory()
	size := mem.Size()
	if addr >= size {
		return nil, i.fail(&sandbox.ViolationError{Reason: fmt.Sprintf("string at %d: out of memory (%d bytes)", addr, size)})
	}
	b, _ := mem.Read(addr, size-addr)
	if max > 0 && len(b) > max {
		b = b[:max]
	}
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		if max > 0 {
			return b, nil
		}
		return nil, i.fail(&sandbox.ViolationError{Reason: fmt.Sprintf("string at %d: no terminating NUL", addr)})
	}
	return b[:n], nil
}

// Handlers lists the policy's entrypoints.
func (i *Instance) Handlers() []string { return i.mod.Handlers() }

// MemoryPages is the size of the instance's memory in 64 KiB pages, as the last operation
// left it (it is read from any goroutine, and the memory is only touched by its operation's).
func (i *Instance) MemoryPages() uint32 { return i.pages.Load() }

func (i *Instance) notePages() { i.pages.Store(i.g.Memory().Size() / 65536) }

// Call evaluates entrypoint handler with input (the Rego input, JSON) and returns a copy of
// the result set (JSON).
func (i *Instance) Call(ctx context.Context, handler string, input []byte) ([]byte, error) {
	return i.CallAppend(ctx, handler, input, nil)
}

// CallAppend is Call appending the output to dst.
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
	ep, ok := i.mod.entrypoints[handler]
	if !ok {
		return dst, fmt.Errorf("opa: handler %q: %w", handler, sandbox.ErrUnknownHandler)
	}
	if !json.Valid(input) {
		return dst, &sandbox.GuestError{Status: abi.StatusInvalidInput, Message: "the input is not valid JSON"}
	}
	timeout := i.mod.cfg.Limits.CallTimeout
	done := ctx.Done()
	if done != nil {
		i.op.Arm(ctx, id)
	}
	if done != nil || timeout != sandbox.NoTimeout {
		i.mod.wd.Entered(&i.wde)
	}
	i.abortMsg.Store(nil)
	i.evalNow, i.callCtx = i.mod.now(), ctx
	out, err := i.eval(context.WithValue(ctx, instKey{}, i), ep, input)
	i.callCtx = nil
	if done != nil {
		i.op.Disarm()
	}
	i.notePages()
	i.out.endCall()
	if err != nil {
		return dst, i.callError(ctx, id, timeout, handler, err)
	}
	i.decisions[i.mod.epSlot[ep]].Add(1)
	return append(dst, out...), nil
}

// eval runs one evaluation from the saved heap: opa_eval when the module has it (the input
// written at the heap pointer, the heap after it), else the eval context functions.
func (i *Instance) eval(ctx context.Context, ep int32, input []byte) ([]byte, error) {
	if i.fn.eval != nil {
		need := uint64(i.heap) + uint64(len(input))
		if err := i.ensure(need); err != nil {
			return nil, err
		}
		i.g.Memory().Write(i.heap, input)
		r, err := i.fn.eval.Call(ctx, 0, uint64(uint32(ep)), uint64(i.dataAddr), uint64(i.heap), uint64(len(input)), need, 0)
		if err != nil {
			return nil, err
		}
		return i.cstring(uint32(r[0]), 0)
	}
	if _, err := i.fn.heapSet.Call(ctx, uint64(i.heap)); err != nil {
		return nil, err
	}
	ectx, err := i.call1(ctx, i.fn.ctxNew)
	if err != nil {
		return nil, err
	}
	in, err := i.parse(ctx, input)
	if err != nil {
		return nil, err
	}
	if in == 0 {
		return nil, &sandbox.GuestError{Status: abi.StatusInvalidInput, Message: "the policy could not parse the input"}
	}
	for _, c := range []struct {
		f    api.Function
		args []uint64
	}{{i.fn.ctxInput, []uint64{uint64(ectx), uint64(in)}}, {i.fn.ctxData, []uint64{uint64(ectx), uint64(i.dataAddr)}},
		{i.fn.ctxEntry, []uint64{uint64(ectx), uint64(uint32(ep))}}} {
		if _, err := c.f.Call(ctx, c.args...); err != nil {
			return nil, err
		}
	}
	rc, err := i.call1(ctx, i.fn.evalCtx, uint64(ectx))
	if err != nil {
		return nil, err
	}
	if rc != 0 {
		return nil, &sandbox.TrapError{Kind: sandbox.TrapUnreachable, Message: fmt.Sprintf("opa eval returned %d", rc)}
	}
	res, err := i.call1(ctx, i.fn.ctxResult, uint64(ectx))
	if err != nil {
		return nil, err
	}
	s, err := i.call1(ctx, i.fn.dump, uint64(res))
	if err != nil {
		return nil, err
	}
	return i.cstring(s, 0)
}

// ensure grows the memory to hold size bytes, within its clamped maximum.
func (i *Instance) ensure(size uint64) error {
	mem := i.g.Memory()
	if size <= uint64(mem.Size()) {
		return nil
	}
	pages := (size - uint64(mem.Size()) + 65535) / 65536
	if _, ok := mem.Grow(uint32(pages)); !ok {
		return &sandbox.MemoryLimitError{LimitPages: i.mod.cfg.Limits.MemoryPages,
			Cause: fmt.Errorf("an input of %d bytes does not fit", size-uint64(i.heap))}
	}
	return nil
}

// callError turns a call's error into the package's, and records a fatal one.
func (i *Instance) callError(ctx context.Context, id uint64, timeout time.Duration, handler string, err error) error {
	var ge *sandbox.GuestError
	switch {
	case errors.As(err, &ge):
		return err
	case i.killed.Load():
		return i.fail(fmt.Errorf("opa: call %q: instance killed: %w", handler, sandbox.ErrCanceled))
	case i.stops.Is(id):
		switch i.stops.Why() {
		case watchdog.StopCtxDeadline:
			dl, _ := ctx.Deadline()
			return i.fail(&sandbox.DeadlineError{Op: "call", Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true})
		case watchdog.StopCanceled:
			return i.fail(fmt.Errorf("opa: call %q: %w: %w", handler, sandbox.ErrCanceled, context.Canceled))
		case watchdog.StopKilled:
			return i.fail(fmt.Errorf("opa: call %q: instance killed: %w", handler, sandbox.ErrCanceled))
		}
		return i.fail(&sandbox.DeadlineError{Op: "call", Timeout: timeout.String()})
	}
	return i.classify(err, handler)
}

// classify records err, from the guest or about it, as the instance's fatal error: a grow
// refused is a *sandbox.MemoryLimitError, an opa_abort a *sandbox.TrapError with its message.
func (i *Instance) classify(err error, what string) error {
	var me *sandbox.MemoryLimitError
	var te *sandbox.TrapError
	var ae *sandbox.ViolationError
	var mo *sandbox.ModuleError
	switch {
	case errors.As(err, &me), errors.As(err, &ae), errors.As(err, &mo):
	case errors.As(err, &te):
	default:
		var exit *sys.ExitError
		if errors.As(err, &exit) {
			err = &sandbox.ExitError{Code: exit.ExitCode()}
			break
		}
		t := sandbox.ParseTrap(err.Error())
		if msg := i.abortMsg.Load(); msg != nil {
			t = &sandbox.TrapError{Kind: sandbox.TrapUnreachable, Message: "opa_abort: " + *msg, Stack: t.Stack}
		}
		err = t
	}
	if i.growFailed() && me == nil {
		err = &sandbox.MemoryLimitError{LimitPages: i.mod.cfg.Limits.MemoryPages, Cause: err}
	}
	if i.starting {
		if mo == nil && me == nil {
			return &sandbox.ModuleError{Reason: what + ": " + err.Error(), Err: err}
		}
		return err
	}
	return i.fail(err)
}

func (i *Instance) growFailed() bool {
	if i.g == nil {
		return false
	}
	g := i.g.ExportedGlobal(wasmbin.ExportGrowFailed)
	return g != nil && g.Get() != 0
}

// Configure replaces the data document with config's (ConfigData). A document that is not
// valid JSON, or that the policy cannot parse, is refused as a native plugin refuses a
// config, with a *sandbox.GuestError of status abi.StatusConfigRejected, and the last good
// one stays.
func (i *Instance) Configure(ctx context.Context, config map[string]string) error {
	data, err := i.mod.dataOf(config)
	if err != nil {
		return &sandbox.GuestError{Status: abi.StatusConfigRejected, Message: err.Error()}
	}
	id, err := i.enter(ctx, opConfigure)
	if err != nil {
		return err
	}
	defer i.leave(id)
	cctx := context.WithValue(ctx, instKey{}, i)
	defer i.notePages()
	old := i.data
	if err := i.loadData(cctx, data); err != nil {
		if i.failure.Load() != nil {
			return err
		}
		if rerr := i.loadData(cctx, old); rerr != nil {
			return errors.Join(err, rerr)
		}
		return &sandbox.GuestError{Status: abi.StatusConfigRejected, Message: err.Error()}
	}
	i.cfgMu.Lock()
	i.config = maps.Clone(config)
	i.cfgMu.Unlock()
	return nil
}

// Deliver is refused: a policy cannot subscribe.
func (i *Instance) Deliver(context.Context, string, []byte) error {
	return &sandbox.GuestError{Status: abi.StatusUnknownHandler, Message: "an OPA policy cannot subscribe"}
}

// EventsWithin returns no events: a policy keeps none.
func (i *Instance) EventsWithin(uint64, *sandbox.Budget) (sandbox.EventLog, error) {
	return sandbox.EventLog{}, nil
}

// TelemetryWithin returns the instance's decision counters, one per entrypoint in the order
// of their numbers (DecisionsMetric). Nothing is read from the guest: the budget does not
// apply. It may be called from any goroutine, also after Close.
func (i *Instance) TelemetryWithin(*sandbox.Budget) ([]sandbox.Metric, error) {
	out := make([]sandbox.Metric, len(i.decisions))
	for k := range i.decisions {
		out[k] = sandbox.Metric{Name: i.mod.metricNames[k], Kind: abi.Counter, Value: float64(i.decisions[k].Load())}
	}
	return out, nil
}

// AppliedConfigWithin returns the last config accepted; nothing is read from the guest.
func (i *Instance) AppliedConfigWithin(*sandbox.Budget) (map[string]string, error) {
	i.cfgMu.Lock()
	defer i.cfgMu.Unlock()
	if i.config == nil {
		return map[string]string{}, nil
	}
	return maps.Clone(i.config), nil
}

// Calls is the number of calls that have entered the instance, including one in progress.
func (i *Instance) Calls() uint64 { return i.calls.Load() }

func (i *Instance) enter(ctx context.Context, kind uint8) (uint64, error) {
	s := i.state.Load()
	id := lifecycle.ID(s) + 1
	if lifecycle.State(s) != lifecycle.Idle || !i.state.CompareAndSwap(s, lifecycle.BusyWord(id, kind)) {
		return 0, i.unavailable()
	}
	if f := i.failure.Load(); f != nil {
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

func (i *Instance) leave(id uint64) {
	busy := i.state.Load()
	if i.failure.Load() != nil {
		i.state.CompareAndSwap(busy, busy&^lifecycle.Mask|lifecycle.Failed)
		return
	}
	i.state.CompareAndSwap(busy, lifecycle.IdleWord(id))
	if i.failure.Load() != nil {
		i.state.CompareAndSwap(lifecycle.IdleWord(id), lifecycle.IdleWord(id)|lifecycle.Failed)
	}
}

func (i *Instance) unavailable() error {
	switch lifecycle.State(i.state.Load()) {
	case lifecycle.Busy, lifecycle.Idle:
		return sandbox.ErrBusy
	case lifecycle.Failed:
		return &sandbox.UnavailableError{Err: i.failure.Load().err}
	}
	return &sandbox.UnavailableError{Err: fmt.Errorf("opa: instance: %w", sandbox.ErrClosed)}
}

// fail records the fatal error that ends the instance (the first one wins) and returns err.
func (i *Instance) fail(err error) error {
	i.failure.CompareAndSwap(nil, &failure{err: err})
	if s := i.state.Load(); lifecycle.State(s) == lifecycle.Idle {
		i.state.CompareAndSwap(s, s|lifecycle.Failed)
	}
	return err
}

// Err returns the fatal error that ended the instance, sandbox.ErrClosed after Close, or nil.
func (i *Instance) Err() error {
	if lifecycle.State(i.state.Load()) == lifecycle.Closed {
		return fmt.Errorf("opa: instance: %w", sandbox.ErrClosed)
	}
	if f := i.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// Retire ends the instance gracefully, as sandbox.Instance.Retire.
func (i *Instance) Retire() bool {
	_ = i.fail(fmt.Errorf("opa: instance: %w", sandbox.ErrRetired))
	s := lifecycle.State(i.state.Load())
	return s == lifecycle.Failed || s == lifecycle.Closed
}

// Kill stops the instance: a call in progress traps at its next safe point and returns an
// error matching sandbox.ErrCanceled; the instance is never entered again.
func (i *Instance) Kill() {
	if i.killed.Swap(true) {
		return
	}
	_ = i.fail(fmt.Errorf("opa: instance killed: %w", sandbox.ErrCanceled))
	if s := i.state.Load(); lifecycle.State(s) == lifecycle.Busy && lifecycle.Kind(s) == opCall {
		i.stop(lifecycle.ID(s), watchdog.StopKilled)
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
			return fmt.Errorf("opa: close: the call in progress did not return: %w", ctx.Err())
		case <-poll.C:
		}
	}
	if !i.starting {
		i.mod.wd.Remove(&i.wde)
	}
	err := i.g.Close(context.Background())
	i.pages.Store(0)
	i.mod.unref(ctx)
	return err
}

// watched is an Instance as the watchdog sees it.
type watched Instance

func (w *watched) Watch(now time.Duration) bool { return (*Instance)(w).watch(now) }

func (i *Instance) watch(now time.Duration) bool {
	s := i.state.Load()
	if lifecycle.State(s) != lifecycle.Busy || lifecycle.Kind(s) != opCall {
		return false
	}
	id := lifecycle.ID(s)
	limit := i.mod.cfg.Limits.CallTimeout
	why, w := i.op.Check(now, id, limit, limit != sandbox.NoTimeout)
	if why != watchdog.StopNone {
		i.stop(id, why)
	}
	return w
}

func (i *Instance) stop(id uint64, why uint32) {
	i.stops.Mark(id, why)
}

// stopped reports whether the operation running a safe point must stop: the start, when
// its context has ended; a call, when the watchdog or Kill stopped it.
func (i *Instance) stopped(ctx context.Context) bool {
	if i.starting {
		return ctx.Err() != nil
	}
	return i.stops.Running(i.state.Load())
}

// hostFunctions instantiates the module "env" of OPA's imports in the module's runtime.
// The instance is found in the call's context (instKey).
func (m *Module) hostFunctions(ctx context.Context) error {
	b := m.rt.NewHostModuleBuilder(hostModule)
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, g api.Module, st []uint64) {
		msg := message(g, uint32(st[0]))
		if i, ok := ctx.Value(instKey{}).(*Instance); ok {
			i.abortMsg.Store(&msg)
		}
		panic(errors.New("opa_abort: " + msg))
	}), []api.ValueType{i32}, nil).Export("opa_abort")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, g api.Module, st []uint64) {
		if i, ok := ctx.Value(instKey{}).(*Instance); ok {
			i.println(g, uint32(st[0]))
		}
	}), []api.ValueType{i32}, nil).Export("opa_println")
	for n := range 5 {
		params := make([]api.ValueType, 2+n)
		for k := range params {
			params[k] = i32
		}
		name := fmt.Sprintf("opa_builtin%d", n)
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, st []uint64) {
			i, ok := ctx.Value(instKey{}).(*Instance)
			if !ok {
				panic(fmt.Errorf("%s: called outside an evaluation", name))
			}
			st[0] = uint64(i.callBuiltin(ctx, uint32(st[0]), st[2:2+n]))
		}), params, []api.ValueType{i32}).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// message reads a guest message, at most maxMessage bytes.
func message(g api.Module, addr uint32) string {
	mem := g.Memory()
	if mem == nil || addr >= mem.Size() {
		return fmt.Sprintf("(message at %d out of memory)", addr)
	}
	b, _ := mem.Read(addr, min(mem.Size()-addr, maxMessage))
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	return string(b)
}
