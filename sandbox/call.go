package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Why the watchdog or Kill stopped an operation.
const (
	stopNone        = watchdog.StopNone
	stopDeadline    = watchdog.StopDeadline
	stopCtxDeadline = watchdog.StopCtxDeadline
	stopCanceled    = watchdog.StopCanceled
	stopKilled      = watchdog.StopKilled
)

// An operation is one use of an instance, from enter to leave: a call (which may grow the
// input buffer first), a configure, a delivery, a store read or the start. While it runs the
// state word holds its id and its kind, from which the watchdog knows its time limit: a
// deadline costs the call nothing (see watch). A cancellable context is published apart,
// under ctxMu.

// enter moves an idle instance to busy for an operation of kind, publishes a cancellable
// context to the watchdog, and wakes the watchdog if it is parked and the operation needs
// watching. It returns the operation's id.
//
// A stop aimed at an earlier operation can have left the interrupt global set: stop raises
// flagIntr before it checks which operation runs, and enter, after publishing the new
// operation, clears the global when it finds the flag raised (see clearInterrupt). The common
// path thus costs one compare-and-swap and one load, and no write into the guest.
func (i *Instance) enter(ctx context.Context, kind opKind) (uint64, error) {
	done := ctx.Done()
	if done != nil {
		if err := ctx.Err(); err != nil {
			return 0, &NotEnteredError{Op: kind.String(), Err: err}
		}
	}
	s := i.state.Load()
	id := s>>idShift + 1
	if s&stMask != stIdle || !i.state.CompareAndSwap(s, busyWord(id, kind)) {
		return 0, i.unavailable(i.state.Load())
	}
	if f := i.flags.Load(); f != 0 {
		if f&flagHook != 0 {
			i.hook(hookEnter)
		}
		if f&flagIntr != 0 {
			i.clearInterrupt(id)
		}
		if f&flagRetired != 0 {
			i.others.Add(1) // refused: not a call
			i.leave(id)
			return 0, &UnavailableError{Err: i.failure.Load().err}
		}
	}
	if kind != opCall {
		i.others.Add(1)
	}
	if done != nil {
		i.armContext(ctx, id)
	}
	// The watchdog stores parked (and an idle instance's cold flag) before it reads the
	// state words; we published ours before reading them: either it sees this operation, or
	// we see it parked (or our instance moved off its scan list) and wake it (move it back).
	if done != nil || i.timeout(kind) != NoTimeout {
		i.wd.Entered(&i.wde)
	}
	return id, nil
}

// busyWord is the state word of operation id of kind, while it runs.
func busyWord(id uint64, kind opKind) uint64 { return id<<idShift | uint64(kind)<<kindShift | stBusy }

// kindOf is the kind of the operation a state word holds (or last held: failing and closing
// keep the bits).
func kindOf(s uint64) opKind { return opKind(s >> kindShift & kindMask) }

// opKind is what an operation does. Calls are told apart from the others, which are
// counted, so that Calls is the operation count minus theirs.
type opKind uint8

const (
	opCall opKind = iota
	opConfigure
	opDeliver
	opRead
	opStart
)

var opNames = [...]string{opCall: "call", opConfigure: "configure", opDeliver: "deliver", opRead: "read", opStart: "start"}

func (k opKind) String() string { return opNames[k] }

// timeout is the time limit of an operation of kind k.
func (i *Instance) timeout(k opKind) time.Duration {
	switch k {
	case opStart:
		return i.mod.cfg.Limits.StartTimeout
	case opRead:
		return NoTimeout
	}
	return i.mod.cfg.Limits.CallTimeout
}

// armContext publishes the operation's cancellable context to the watchdog.
func (i *Instance) armContext(ctx context.Context, id uint64) {
	i.opCtx = ctx
	i.op.Arm(ctx, id)
}

// disarmContext withdraws it.
func (i *Instance) disarmContext() {
	i.op.Disarm()
	i.opCtx = nil
}

// clearInterrupt resets the interrupt global left set by a stop aimed at an earlier
// operation. It takes intrMu, so a stop that is writing the global finishes first; a stop
// already aimed at operation id (a Kill racing with enter) is kept.
func (i *Instance) clearInterrupt(id uint64) {
	i.intrMu.Lock()
	defer i.intrMu.Unlock()
	if i.stoppedID.Load() == id {
		return
	}
	i.intrG.Set(0)
	i.flags.And(^flagIntr)
	select { // a wake-up meant for the earlier operation must not cut a sleep of this one short
	case <-i.wake:
	default:
	}
}

func (i *Instance) unavailable(s uint64) error {
	switch s & stMask {
	case stIdle, stBusy: // idle: another caller entered and left between our two reads
		return ErrBusy
	case stFailed:
		return &UnavailableError{Err: i.failure.Load().err}
	}
	return &UnavailableError{Err: fmt.Errorf("sandbox: instance: %w", ErrClosed)}
}

// leave ends operation id: back to idle, unless the instance failed, was killed or was
// retired meanwhile. While an operation runs only its owner changes the state word (Kill,
// Retire and Close wait for it or stop it), so the compare-and-swap fails only if the
// operation failed the instance. The flags are read again after it: a Kill or Retire that
// found the operation running, and so left its end to leave, may have raised its flag after
// the first read.
func (i *Instance) leave(id uint64) {
	if i.opCtx != nil {
		i.disarmContext()
	}
	if i.logger.scope.Pending() { // the operation dropped output: report it (see Config.OnDrop)
		i.logger.scope.End()
	}
	if i.flags.Load()&(flagKilled|flagRetired) != 0 {
		i.fail(i.endReason())
		return
	}
	if s := i.state.Load(); s&stMask == stBusy && s>>idShift == id {
		i.state.CompareAndSwap(s, id<<idShift) // stIdle is 0
	}
	if i.flags.Load()&(flagKilled|flagRetired) != 0 {
		i.endIfIdle()
	}
}

// endReason is the failure of an instance ended by Kill or Retire.
func (i *Instance) endReason() error {
	if i.flags.Load()&flagKilled != 0 {
		return errInstanceKilled
	}
	return fmt.Errorf("sandbox: instance: %w", ErrRetired)
}

// endIfIdle fails an idle instance (for Kill or Retire), taking it busy first so that no
// operation can start in between. It reports whether the instance has ended: false while an
// operation runs, whose leave then ends it.
func (i *Instance) endIfIdle() bool {
	for {
		s := i.state.Load()
		switch s & stMask {
		case stIdle:
			if i.state.CompareAndSwap(s, busyWord(s>>idShift+1, opRead)) {
				i.others.Add(1) // the id it took is not a call
				i.fail(i.endReason())
				return true
			}
		case stBusy:
			return false
		default:
			return true
		}
	}
}

// Retire ends the instance gracefully: at once if it is idle, else when the operation in
// progress returns (which it does normally). Either way the instance is never entered again:
// later operations get an error matching ErrRetired, and Err reports it. Retire reports
// whether the instance has ended already, that is whether no operation is running and
// Close will not wait. Retire is what a pool calls to drain a member.
func (i *Instance) Retire() bool {
	i.flags.Or(flagRetired)
	return i.endIfIdle()
}

// Calls is the number of calls (Call, CallAppend) that have entered the instance, including
// one in progress.
func (i *Instance) Calls() uint64 {
	return i.state.Load()>>idShift - i.others.Load()
}

// handler resolves a handler name, with a one-entry cache for the common case of one
// handler called over and over.
func (i *Instance) handler(name string) (uint32, bool) {
	if name == i.lastH && name != "" {
		return i.lastIdx, true
	}
	h, ok := i.handlerIdx[name]
	if ok {
		i.lastH, i.lastIdx = name, h
	}
	return h, ok
}

// Call runs handler on input and returns a copy of the output.
func (i *Instance) Call(ctx context.Context, handler string, input []byte) ([]byte, error) {
	return i.CallAppend(ctx, handler, input, nil)
}

// CallAppend is Call appending the output to dst, so that a caller reusing dst makes no
// allocation.
func (i *Instance) CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error) {
	id, err := i.enter(ctx, opCall)
	if err != nil {
		return dst, err
	}
	defer i.leave(id)
	if on := i.mod.cfg.OnCall; on != nil && id&i.mod.sampleMask == 0 {
		t0 := time.Now()
		defer func() { on(time.Since(t0)) }()
	}
	h, ok := i.handler(handler)
	if !ok {
		return dst, fmt.Errorf("handler %q: %w", handler, ErrUnknownHandler)
	}
	if err := i.writeInput(id, input); err != nil {
		return dst, err
	}
	i.stack[0], i.stack[1] = uint64(h), uint64(len(input))
	st, err := i.invoke(id, i.fn(fnCall))
	if err != nil {
		return dst, err
	}
	return i.result(st, dst)
}

// Configure pushes a new config; the guest's change callbacks run. A *GuestError with
// STATUS_CONFIG_REJECTED leaves the old config in place.
func (i *Instance) Configure(ctx context.Context, config map[string]string) error {
	id, err := i.enter(ctx, opConfigure)
	if err != nil {
		return err
	}
	defer i.leave(id)
	return i.configure(id, config)
}

func (i *Instance) configure(id uint64, config map[string]string) error {
	enc := abi.AppendConfig(nil, config)
	if err := i.writeInput(id, enc); err != nil {
		return err
	}
	i.stack[0] = uint64(len(enc))
	st, err := i.invoke(id, i.fn(fnConfigure))
	if err != nil {
		return fmt.Errorf("%s: %w", abi.ExportConfigure, err)
	}
	_, err = i.result(st, nil)
	return err
}

// Deliver hands a bus event to the guest. A guest without wasmvisor_deliver gets a
// *GuestError with STATUS_UNKNOWN_HANDLER.
func (i *Instance) Deliver(ctx context.Context, topic string, payload []byte) error {
	id, err := i.enter(ctx, opDeliver)
	if err != nil {
		return err
	}
	defer i.leave(id)
	f := i.fn(fnDeliver)
	if f == nil {
		return &GuestError{Status: abi.StatusUnknownHandler, Message: "the plugin does not export " + abi.ExportDeliver}
	}
	enc := abi.AppendDelivery(nil, topic, payload)
	if err := i.writeInput(id, enc); err != nil {
		return err
	}
	i.stack[0] = uint64(len(enc))
	st, err := i.invoke(id, f)
	if err != nil {
		return err
	}
	_, err = i.result(st, nil)
	return err
}

// writeInput copies input into the guest's input buffer, growing it first if needed.
func (i *Instance) writeInput(id uint64, input []byte) error {
	if b, ok := i.span(i.ctrl+abi.CtrlInPtr, 8); ok && uint64(len(input)) <= uint64(binary.LittleEndian.Uint32(b[4:])) {
		if dst, ok := i.span(binary.LittleEndian.Uint32(b), uint32(len(input))); ok {
			copy(dst, input)
			return nil
		}
	}
	return i.writeInputSlow(id, input)
}

// writeInputSlow is writeInput when the buffer must grow first, or something is wrong.
func (i *Instance) writeInputSlow(id uint64, input []byte) error {
	ptr, capacity, err := i.inBuf()
	if err != nil {
		return err
	}
	if uint64(len(input)) > uint64(capacity) {
		if uint64(len(input)) > math.MaxUint32 {
			return &GuestError{Status: abi.StatusNoMemory, Message: "input larger than 4 GiB"}
		}
		i.stack[0] = uint64(len(input))
		st, err := i.invoke(id, i.fn(fnReserve))
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
	if b, ok := i.span(ptr, uint32(len(input))); ok {
		copy(b, input)
		return nil
	}
	return i.violation(fmt.Sprintf("input buffer %#x+%d out of memory (%d bytes)", ptr, len(input), len(i.lm.buf)))
}

func (i *Instance) inBuf() (ptr, capacity uint32, err error) {
	b, ok := i.span(i.ctrl+abi.CtrlInPtr, 8)
	if !ok {
		return 0, 0, i.violation("control block out of memory")
	}
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), nil
}

// span returns guest memory [ptr, ptr+n) without copying, from the buffer the instance's
// allocator holds (see linearMemory).
func (i *Instance) span(ptr, n uint32) ([]byte, bool) {
	end := uint64(ptr) + uint64(n)
	if end > uint64(len(i.lm.buf)) {
		return nil, false
	}
	return i.lm.buf[ptr:end:end], true
}

// result reads the status and output of the export that just returned st.
func (i *Instance) result(st uint64, dst []byte) ([]byte, error) {
	if abi.Status(uint32(st)) == abi.StatusOK {
		if b, ok := i.span(i.ctrl+abi.CtrlOutPtr, 8); ok {
			if out, ok := i.span(binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])); ok {
				return append(dst, out...), nil
			}
		}
	}
	return i.resultSlow(st, dst)
}

// resultSlow is result for a status other than OK, or when something is wrong.
func (i *Instance) resultSlow(st uint64, dst []byte) ([]byte, error) {
	status := abi.Status(uint32(st))
	if !status.Valid() {
		return dst, i.violation(fmt.Sprintf("status %d", uint32(st)))
	}
	b, ok := i.span(i.ctrl+abi.CtrlOutPtr, 8)
	if !ok {
		return dst, i.violation("control block out of memory")
	}
	ptr, n := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
	out, ok := i.span(ptr, n)
	if !ok {
		return dst, i.violation(fmt.Sprintf("output %#x+%d out of memory (%d bytes)", ptr, n, len(i.lm.buf)))
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
func (i *Instance) invoke(id uint64, f api.Function) (uint64, error) {
	err := errKilledBeforeEntry
	if fl := i.flags.Load(); fl&flagKilled == 0 {
		if fl&flagHook != 0 {
			i.hook(hookInvoke)
		}
		err = f.CallWithStack(&i.callCtx, i.stack[:])
	}
	if err == nil {
		return i.stack[0], nil
	}
	return 0, i.failed(id, err)
}

// failed turns the error an export returned into a typed error, and fails the instance if
// it is fatal.
func (i *Instance) failed(id uint64, err error) error {
	err = i.classify(err, id)
	if Fatal(err) {
		i.fail(err)
	}
	return err
}

// watch is called by the watchdog, on its own goroutine, on every tick while it is awake,
// with the time since its epoch. It reports whether the instance runs an operation that
// needs watching, and stops one past its kind's time limit or whose context is done (see
// watchdog.Op.Check).
func (i *Instance) watch(now time.Duration) bool {
	s := i.state.Load()
	if s&stMask != stBusy {
		return false
	}
	id := s >> idShift
	limit := i.timeout(kindOf(s))
	why, watched := i.op.Check(now, id, limit, limit != NoTimeout)
	if why != stopNone {
		i.stop(id, why)
	}
	return watched
}

// stop interrupts operation id, if it still runs: the guest traps at its next safe point.
// flagIntr is raised before the state is read, and enter publishes an operation before it
// reads the flags, so an operation that starts after the check below finds flagIntr raised and
// clears the global (waiting on intrMu for this stop to finish writing it).
func (i *Instance) stop(id uint64, reason uint32) {
	i.intrMu.Lock()
	defer i.intrMu.Unlock()
	if i.stoppedID.Load() == id {
		return
	}
	i.flags.Or(flagIntr)
	if s := i.state.Load(); s&stMask != stBusy || s>>idShift != id {
		return // it ended; the next operation clears the flag
	}
	if i.stopHook != nil {
		i.stopHook() // tests: the operation may end here, and the next one start
	}
	i.stopReason.Store(reason)
	i.stoppedID.Store(id)
	i.intrG.Set(1)
	select {
	case i.wake <- struct{}{}:
	default:
	}
	i.cancelHostFunc()
}

// errStopped unwinds a guest out of a host function when its operation has been stopped.
var errStopped = errors.New("call stopped")

// stopped reports whether the operation in progress has been stopped (its deadline passed,
// its context ended, or Kill). It costs two atomic loads.
func (i *Instance) stopped() bool {
	s := i.state.Load()
	return s&stMask == stBusy && i.stoppedID.Load() == s>>idShift
}

// checkStopped unwinds the guest out of a host function once its operation has been
// stopped: the operation then returns its *DeadlineError (or an error matching ErrCanceled,
// after a cancellation or Kill), exactly as when the guest traps at a safe point. Every
// host function calls it at entry (see instantiateHostModule), and those whose work grows
// with a guest-chosen length call it between pieces of at most hostChunk bytes
// (stoppableReader), or between two lines for guest output (guestio.LineWriter checks the
// same stop through its meter; stoppingWriter unwinds), so that a stopped operation leaves
// a host function within the time of one piece or one line. It must be called only on the operation's own goroutine,
// from a host function.
func (i *Instance) checkStopped() {
	if i.stopped() {
		panic(errStopped)
	}
}

// hostChunk is the most a host function does for a guest between two checkStopped.
const hostChunk = 64 << 10

// stoppableReader is the guest's random source (WASI random_get) as the sandbox hands it to
// wazero: reads of at most hostChunk bytes, each after a checkStopped.
type stoppableReader struct {
	i *Instance
	r io.Reader
}

func (s stoppableReader) Read(p []byte) (int, error) {
	s.i.checkStopped()
	return s.r.Read(p[:min(len(p), hostChunk)])
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

func (i *Instance) classify(err error, id uint64) error {
	op := kindOf(i.state.Load()) // the owner's operation: only fail and Kill touch the word, and keep the kind
	// stop writes stoppedID and stopReason, then the interrupt global, holding intrMu; the
	// guest read the global with a plain load. Reading the two under intrMu orders them after
	// any stop whose write the guest saw (RATIONALE.md, "Why a plain store stops the guest").
	i.intrMu.Lock()
	stoppedID, reason := i.stoppedID.Load(), i.stopReason.Load()
	i.intrMu.Unlock()
	if errors.Is(err, errKilledBeforeEntry) || stoppedID == id && reason == stopKilled {
		return fmt.Errorf("%s: instance killed: %w", op, ErrCanceled)
	}
	if stoppedID == id {
		switch reason {
		case stopDeadline:
			return &DeadlineError{Op: op.String(), Timeout: i.timeout(op).String()}
		case stopCtxDeadline:
			dl, _ := i.opCtx.Deadline()
			return &DeadlineError{Op: op.String(), Timeout: "context deadline " + dl.Format(time.RFC3339Nano), Caller: true}
		default:
			return fmt.Errorf("%s: %w: %w", op, ErrCanceled, context.Canceled)
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
