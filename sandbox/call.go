package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
)

// Why the watchdog or Kill stopped an operation.
const (
	stopNone uint32 = iota
	stopDeadline
	stopCtxDeadline
	stopCanceled
	stopKilled
)

// op is one operation on an instance, from enter to leave: a call (which may grow the input
// buffer first), a configure, a delivery, a store read or the start. It has one id and one
// deadline.
type op struct {
	id      uint64
	name    string
	timeout time.Duration
	watched bool
	ctx     context.Context
}

// enter moves an idle instance to busy and arms the watchdog for the operation.
func (i *Instance) enter(ctx context.Context, timeout time.Duration) (op, error) {
	s := i.state.Load()
	if s&stMask != stIdle {
		return op{}, i.unavailable(s)
	}
	if err := ctx.Err(); err != nil {
		return op{}, err
	}
	id := s>>idShift + 1
	if !i.state.CompareAndSwap(s, id<<idShift|stBusy) {
		return op{}, i.unavailable(i.state.Load())
	}
	o := op{id: id, name: "call", timeout: timeout, ctx: ctx}
	done := ctx.Done()
	if timeout != NoTimeout || done != nil {
		o.watched = true
		wd := i.mod.eng.wd
		wd.enter()
		dl := int64(noDeadline)
		if timeout != NoTimeout {
			dl = wd.deadline(timeout)
		}
		if done != nil {
			i.ctxMu.Lock()
			i.callCtx, i.ctxID = ctx, id
			i.ctxMu.Unlock()
		}
		i.deadline.Store(dl)
		i.armed.Store(id)
	}
	i.seqG.Set(id)
	return o, nil
}

func (i *Instance) unavailable(s uint64) error {
	switch s & stMask {
	case stBusy:
		return ErrBusy
	case stFailed:
		return i.failure.Load().err
	}
	return fmt.Errorf("sandbox: instance: %w", ErrClosed)
}

// leave ends the operation: back to idle, unless the instance failed or was killed meanwhile.
func (i *Instance) leave(o op) {
	if o.watched {
		if o.ctx.Done() != nil {
			i.ctxMu.Lock()
			i.callCtx = nil
			i.ctxMu.Unlock()
		}
		i.mod.eng.wd.exit()
	}
	if i.killed.Load() {
		i.fail(fmt.Errorf("sandbox: instance killed: %w", ErrCanceled))
		return
	}
	i.state.CompareAndSwap(o.id<<idShift|stBusy, o.id<<idShift) // stIdle is 0
}

// handler resolves a handler name, with a one-entry cache for the common case of one
// handler called over and over.
func (i *Instance) handler(name string) (uint32, bool) {
	if name == i.lastH && name != "" {
		return i.lastIdx, true
	}
	h, ok := i.handlerIdx[name]
	return h, ok
}

// Call runs handler on input and returns a copy of the output.
func (i *Instance) Call(ctx context.Context, handler string, input []byte) ([]byte, error) {
	return i.CallAppend(ctx, handler, input, nil)
}

// CallAppend is Call appending the output to dst, so that a caller reusing dst makes no
// allocation.
func (i *Instance) CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error) {
	o, err := i.enter(ctx, i.mod.cfg.Limits.CallTimeout)
	if err != nil {
		return dst, err
	}
	defer i.leave(o)
	h, ok := i.handler(handler)
	if !ok {
		return dst, fmt.Errorf("handler %q: %w", handler, ErrUnknownHandler)
	}
	i.lastH, i.lastIdx = handler, h
	if err := i.writeInput(o, input); err != nil {
		return dst, err
	}
	i.stack[0], i.stack[1] = uint64(h), uint64(len(input))
	st, err := i.invoke(o, i.fn(fnCall))
	if err != nil {
		return dst, err
	}
	return i.result(st, dst)
}

// Configure pushes a new config; the guest's change callbacks run. A *GuestError with
// STATUS_CONFIG_REJECTED leaves the old config in place.
func (i *Instance) Configure(ctx context.Context, config map[string]string) error {
	o, err := i.enter(ctx, i.mod.cfg.Limits.CallTimeout)
	if err != nil {
		return err
	}
	defer i.leave(o)
	o.name = "configure"
	return i.configure(o, config)
}

func (i *Instance) configure(o op, config map[string]string) error {
	enc := abi.AppendConfig(nil, config)
	if err := i.writeInput(o, enc); err != nil {
		return err
	}
	i.stack[0] = uint64(len(enc))
	st, err := i.invoke(o, i.fn(fnConfigure))
	if err != nil {
		return fmt.Errorf("%s: %w", abi.ExportConfigure, err)
	}
	_, err = i.result(st, nil)
	return err
}

// Deliver hands a bus event to the guest. A guest without wasmvisor_deliver gets a
// *GuestError with STATUS_UNKNOWN_HANDLER.
func (i *Instance) Deliver(ctx context.Context, topic string, payload []byte) error {
	o, err := i.enter(ctx, i.mod.cfg.Limits.CallTimeout)
	if err != nil {
		return err
	}
	defer i.leave(o)
	o.name = "deliver"
	f := i.fn(fnDeliver)
	if f == nil {
		return &GuestError{Status: abi.StatusUnknownHandler, Message: "the plugin does not export " + abi.ExportDeliver}
	}
	enc := abi.AppendDelivery(nil, topic, payload)
	if err := i.writeInput(o, enc); err != nil {
		return err
	}
	i.stack[0] = uint64(len(enc))
	st, err := i.invoke(o, f)
	if err != nil {
		return err
	}
	_, err = i.result(st, nil)
	return err
}

// writeInput copies input into the guest's input buffer, growing it first if needed.
func (i *Instance) writeInput(o op, input []byte) error {
	ptr, capacity, err := i.inBuf()
	if err != nil {
		return err
	}
	if uint64(len(input)) > uint64(capacity) {
		if uint64(len(input)) > math.MaxUint32 {
			return &GuestError{Status: abi.StatusNoMemory, Message: "input larger than 4 GiB"}
		}
		i.stack[0] = uint64(len(input))
		st, err := i.invoke(o, i.fn(fnReserve))
		if err != nil {
			return fmt.Errorf("%s: %w", abi.ExportReserve, err)
		}
		if _, err := i.result(st, nil); err != nil {
			return err
		}
		if ptr, capacity, err = i.inBuf(); err != nil {
			return err
		}
		if uint64(len(input)) > uint64(capacity) {
			return i.violation(fmt.Sprintf("%s(%d) left in_cap at %d", abi.ExportReserve, len(input), capacity))
		}
	}
	if len(input) > 0 && !i.mem.Write(ptr, input) {
		return i.violation(fmt.Sprintf("input buffer %#x+%d out of memory", ptr, len(input)))
	}
	return nil
}

func (i *Instance) inBuf() (ptr, capacity uint32, err error) {
	b, ok := i.mem.Read(i.ctrl+abi.CtrlInPtr, 8)
	if !ok {
		return 0, 0, i.violation("control block out of memory")
	}
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), nil
}

// result reads the status and output of the export that just returned st.
func (i *Instance) result(st uint64, dst []byte) ([]byte, error) {
	status := abi.Status(uint32(st))
	if !status.Valid() {
		return dst, i.violation(fmt.Sprintf("status %d", uint32(st)))
	}
	b, ok := i.mem.Read(i.ctrl+abi.CtrlOutPtr, 8)
	if !ok {
		return dst, i.violation("control block out of memory")
	}
	out, err := i.view(binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), "output")
	if err != nil {
		return dst, i.violation(err.Error())
	}
	if status != abi.StatusOK {
		return dst, &GuestError{Status: status, Message: string(out)}
	}
	return append(dst, out...), nil
}

// view returns the guest memory [ptr, ptr+n) without copying, or an error naming what.
func (i *Instance) view(ptr, n uint32, what string) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b, ok := i.mem.Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("%s %#x+%d out of memory (%d bytes)", what, ptr, n, i.mem.Size())
	}
	return b, nil
}

func (i *Instance) violation(reason string) error {
	err := &ViolationError{Reason: reason}
	i.fail(err)
	return err
}

// invoke runs one export with the parameters in i.stack, and turns every way it can end into
// a typed error. A fatal error fails the instance.
func (i *Instance) invoke(o op, f api.Function) (uint64, error) {
	var err error
	if i.killed.Load() {
		err = errKilledBeforeEntry
	} else {
		err = f.CallWithStack(context.Background(), i.stack[:])
	}
	if err == nil {
		return i.stack[0], nil
	}
	err = i.classify(err, o)
	if Fatal(err) {
		i.fail(err)
	}
	return 0, err
}

// watch is called by the watchdog on every tick while operations are in flight.
func (i *Instance) watch(now int64) {
	s := i.state.Load()
	if s&stMask != stBusy {
		return
	}
	id := s >> idShift
	if i.armed.Load() != id {
		return // not watched, or not armed yet
	}
	dl := i.deadline.Load()
	if i.armed.Load() != id || i.state.Load() != s {
		return // the operation ended while we read its deadline
	}
	if now >= dl {
		i.stop(id, stopDeadline)
		return
	}
	i.ctxMu.Lock()
	c, cid := i.callCtx, i.ctxID
	i.ctxMu.Unlock()
	if c == nil || cid != id {
		return
	}
	switch err := c.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		i.stop(id, stopCtxDeadline)
	case err != nil:
		i.stop(id, stopCanceled)
	}
}

// stop interrupts operation id: the guest traps at its next safe point.
func (i *Instance) stop(id uint64, reason uint32) {
	i.intrMu.Lock()
	defer i.intrMu.Unlock()
	if i.stoppedID.Load() == id {
		return
	}
	i.stopReason.Store(reason)
	i.stoppedID.Store(id)
	i.intrG.Set(id)
	select {
	case i.wake <- struct{}{}:
	default:
	}
}

// errStopped unwinds a guest out of a host function when its operation has been stopped.
var errStopped = errors.New("call stopped")

// stopped reports whether the operation in progress has been stopped.
func (i *Instance) stopped() bool {
	s := i.state.Load()
	return s&stMask == stBusy && i.stoppedID.Load() == s>>idShift
}

// sleep is the guest's real sleep (WASI poll_oneoff with ClockReal): it ends early, and
// unwinds the guest, when the operation is stopped.
func (i *Instance) sleep(ns int64) {
	if i.stopped() {
		panic(errStopped)
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-i.wake:
		if i.stopped() {
			panic(errStopped)
		}
	}
}

func (i *Instance) classify(err error, o op) error {
	if errors.Is(err, errKilledBeforeEntry) || i.stoppedID.Load() == o.id && i.stopReason.Load() == stopKilled {
		return fmt.Errorf("%s: instance killed: %w", o.name, ErrCanceled)
	}
	if i.stoppedID.Load() == o.id {
		switch i.stopReason.Load() {
		case stopDeadline:
			return &DeadlineError{Op: o.name, Timeout: o.timeout.String()}
		case stopCtxDeadline:
			dl, _ := o.ctx.Deadline()
			return &DeadlineError{Op: o.name, Timeout: "context deadline " + dl.Format(time.RFC3339Nano)}
		default:
			return fmt.Errorf("%s: %w: %w", o.name, ErrCanceled, context.Canceled)
		}
	}
	var cause error
	var exit *sys.ExitError
	var trap *TrapError
	var viol *ViolationError
	switch {
	case errors.As(err, &viol):
		cause = viol
	case errors.As(err, &trap):
		trap.Stack = guestio.Stack(err.Error())
		cause = trap
	case errors.As(err, &exit):
		cause = &ExitError{Code: exit.ExitCode()}
	default:
		cause = trapOf(err.Error())
	}
	if i.growG.Get() != 0 {
		return &MemoryLimitError{LimitPages: i.mod.cfg.Limits.MemoryPages, Cause: cause}
	}
	return cause
}

// trapOf turns wazero's trap message into a TrapError.
func trapOf(msg string) *TrapError {
	first, k, stack := guestio.Trap(msg)
	t := &TrapError{Kind: TrapOther, Message: first, Stack: stack}
	if k != "" {
		t.Message = k
		switch kind := TrapKind(k); kind {
		case TrapUnreachable, TrapOutOfBounds, TrapDivideByZero, TrapIntegerOverflow, TrapInvalidConv,
			TrapStackOverflow, TrapTableAccess, TrapIndirectCall:
			t.Kind = kind
		}
	}
	return t
}
