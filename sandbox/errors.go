package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// Sentinel errors. Every error this package returns wraps one of them (or is a GuestError),
// so callers branch with errors.Is and read details with errors.As. An operation whose
// context had ended before it entered its instance returns a *NotEnteredError (ErrNotEntered),
// which errors.Is also matches with the context's own error.
var (
	// ErrInvalidModule is wrapped by a *ModuleError: the bytes are not a Wasm module that
	// wazero can compile, or the module cannot be limited (memory).
	ErrInvalidModule = errors.New("invalid module")
	// ErrABI is wrapped by an *ABIError: the module does not follow ABI v1 (a missing,
	// malformed or unexpected export or import, a bad control block, an unknown version).
	ErrABI = errors.New("module does not follow the wasmvisor ABI")
	// ErrTrap is wrapped by a *TrapError: the guest trapped or aborted.
	ErrTrap = errors.New("guest trapped")
	// ErrDeadline is wrapped by a *DeadlineError: a call or the start ran past its deadline.
	ErrDeadline = errors.New("deadline exceeded")
	// ErrMemoryLimit is wrapped by a *MemoryLimitError: the guest needed more memory than its
	// limit allows.
	ErrMemoryLimit = errors.New("memory limit reached")
	// ErrExit is wrapped by an *ExitError: the guest called proc_exit.
	ErrExit = errors.New("guest exited")
	// ErrABIViolation is wrapped by a *ViolationError: the guest handed the host an
	// out-of-range pointer or length, a bad status code or a malformed store.
	ErrABIViolation = errors.New("ABI violation by the guest")
	// ErrCanceled is returned when the caller's context ended a call, or Kill did.
	ErrCanceled = errors.New("call canceled")
	// ErrClosed is returned by every method of a closed Instance, Module or Engine.
	ErrClosed = errors.New("closed")
	// ErrBusy is returned when an Instance is entered while it is serving another call.
	ErrBusy = errors.New("instance busy")
	// ErrRetired is returned by an Instance that Retire ended: it served its last operation.
	ErrRetired = errors.New("instance retired")
	// ErrUnknownHandler is returned for a handler name the plugin does not export, and is
	// matched by a *GuestError with status STATUS_UNKNOWN_HANDLER.
	ErrUnknownHandler = errors.New("unknown handler")
	// ErrGuest is matched by every *GuestError: the guest returned an error status.
	ErrGuest = errors.New("guest returned an error")
	// ErrReadBudget is returned by AppliedConfigWithin when the applied config does not fit
	// in the read's Budget: nothing was copied. (Events and telemetry are read partially
	// instead, and the Budget counts what was left out.)
	ErrReadBudget = errors.New("store read budget exhausted")
	// ErrInvalidConfig is wrapped by the error of a Config, Limits, Capabilities or Option
	// that cannot be honoured: a limit out of range, an unknown clock or random source, a
	// directory grant whose guest path is relative or whose host directory cannot be opened
	// (checked at Compile, and again at each Instantiate, which opens the grants afresh: a
	// directory removed since gives this error wrapping os.ErrNotExist), a compilation cache
	// directory that cannot be used.
	ErrInvalidConfig = errors.New("invalid sandbox configuration")
	// ErrNotEntered is wrapped by a *NotEnteredError: the operation's context had ended
	// before the operation entered its instance, so nothing ran and the instance is unharmed.
	ErrNotEntered = errors.New("context ended before the operation entered the instance")
)

// NotEnteredError is returned by an operation whose context had ended (cancelled or past its
// deadline) before it entered its Instance: the guest did not run, the instance is not
// touched and stays usable, so the error is not Fatal and not CallerEnded. Err is the
// context's error (context.Canceled or context.DeadlineExceeded); errors.Is matches both
// ErrNotEntered and Err, so a caller that tests errors.Is(err, context.DeadlineExceeded) sees
// it as before. A pool tells with errors.As a call that never ran (report the wait that ran
// out) from one that the context ended inside (a *DeadlineError, or ErrCanceled wrapped).
type NotEnteredError struct {
	Op  string // "call", "configure", "deliver", "read" or "start"
	Err error  // the context's error
}

func (e *NotEnteredError) Error() string {
	return fmt.Sprintf("%s not entered: %v", e.Op, e.Err)
}

// Unwrap returns ErrNotEntered and the context's error.
func (e *NotEnteredError) Unwrap() []error { return []error{ErrNotEntered, e.Err} }

// UnavailableError is returned by an operation that did not enter its Instance because the
// instance had ended: failed, killed, retired or closed. Err is why, what Instance.Err
// returns, and errors.Is and errors.As see through to it. A pool tells with it an operation
// that never ran (try another instance) from one that failed.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }

// Unwrap returns the reason the instance ended.
func (e *UnavailableError) Unwrap() error { return e.Err }

// ModuleError reports a module that cannot be compiled or limited.
type ModuleError struct {
	Reason string
	Err    error // the underlying cause, if any
}

func (e *ModuleError) Error() string { return "invalid module: " + e.Reason }

// Unwrap returns ErrInvalidModule and the cause.
func (e *ModuleError) Unwrap() []error { return []error{ErrInvalidModule, e.Err} }

// ProblemKind classifies an ABI problem.
type ProblemKind string

// Problem kinds.
const (
	Missing    ProblemKind = "missing"
	Malformed  ProblemKind = "malformed"
	Unexpected ProblemKind = "unexpected"
)

// Problem is one thing wrong with a module's exports, imports or control block.
type Problem struct {
	Kind   ProblemKind `json:"kind"`
	What   string      `json:"what"` // "export", "import", "control block", "section"
	Name   string      `json:"name"`
	Detail string      `json:"detail,omitempty"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s %q", p.Kind, p.What, p.Name)
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// ABIError lists every problem found when checking a module against the ABI.
type ABIError struct {
	Problems []Problem
}

func (e *ABIError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "module does not follow the wasmvisor ABI: " + strings.Join(parts, "; ")
}

// Unwrap returns ErrABI.
func (e *ABIError) Unwrap() error { return ErrABI }

// TrapKind names why a guest trapped.
type TrapKind string

// Trap kinds.
const (
	TrapUnreachable     TrapKind = "unreachable"
	TrapOutOfBounds     TrapKind = "out of bounds memory access"
	TrapDivideByZero    TrapKind = "integer divide by zero"
	TrapIntegerOverflow TrapKind = "integer overflow"
	TrapInvalidConv     TrapKind = "invalid conversion to integer"
	TrapStackOverflow   TrapKind = "stack overflow"
	TrapTableAccess     TrapKind = "invalid table access"
	TrapIndirectCall    TrapKind = "indirect call type mismatch"
	TrapAbort           TrapKind = "abort" // the guest called the abort import (an SDK panic)
	TrapOther           TrapKind = "other"
)

// TrapError reports a trap. Stack holds the Wasm stack, innermost frame first, where wazero
// gives one.
type TrapError struct {
	Kind    TrapKind
	Message string
	Stack   []string
}

func (e *TrapError) Error() string {
	if e.Message != "" && e.Message != string(e.Kind) {
		return fmt.Sprintf("guest trapped (%s): %s", e.Kind, e.Message)
	}
	return fmt.Sprintf("guest trapped (%s)", e.Kind)
}

// Unwrap returns ErrTrap.
func (e *TrapError) Unwrap() error { return ErrTrap }

// DeadlineError reports a call or start that ran past its deadline.
type DeadlineError struct {
	Op      string // "call" or "start"
	Timeout string // the limit that applied, e.g. "50ms", or "context deadline"
	// Caller is true when the deadline was the caller's (its context's), not the instance's
	// own limit (Limits.CallTimeout): the caller ended the operation. See CallerEnded.
	Caller bool
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("%s deadline exceeded (%s)", e.Op, e.Timeout)
}

// Is matches ErrDeadline and context.DeadlineExceeded.
func (e *DeadlineError) Is(target error) bool {
	return target == ErrDeadline || target == context.DeadlineExceeded
}

// MemoryLimitError reports a guest that failed because memory.grow was refused at its limit,
// or a module refused at Compile because its memory or its tables need more at start than
// the limits allow (the tables' limit is the same for every module: 262,144 elements, see
// RATIONALE.md, "Memory accounting").
type MemoryLimitError struct {
	LimitPages uint32
	Cause      error // the trap or exit that followed the refusal, or why the module was refused
}

func (e *MemoryLimitError) Error() string {
	if errors.Is(e.Cause, wasmbin.ErrTablesAboveLimit) {
		return fmt.Sprintf("memory limit reached: %v", e.Cause)
	}
	return fmt.Sprintf("memory limit reached (%d pages)", e.LimitPages)
}

// Unwrap returns ErrMemoryLimit and the cause.
func (e *MemoryLimitError) Unwrap() []error { return []error{ErrMemoryLimit, e.Cause} }

// ExitError reports a guest that called proc_exit; the instance is over, whatever the code.
type ExitError struct {
	Code uint32
}

func (e *ExitError) Error() string { return fmt.Sprintf("guest exited with code %d", e.Code) }

// Unwrap returns ErrExit.
func (e *ExitError) Unwrap() error { return ErrExit }

// ViolationError reports the guest breaking the ABI at run time.
type ViolationError struct {
	Reason string
}

func (e *ViolationError) Error() string { return "ABI violation: " + e.Reason }

// Unwrap returns ErrABIViolation.
func (e *ViolationError) Unwrap() error { return ErrABIViolation }

// GuestError is a non-OK status returned by the guest with its message. It does not end the
// instance.
type GuestError struct {
	Status  abi.Status
	Message string
}

func (e *GuestError) Error() string {
	if e.Message == "" {
		return "guest error: " + e.Status.String()
	}
	return fmt.Sprintf("guest error (%s): %s", e.Status, e.Message)
}

// Is matches ErrGuest, and ErrUnknownHandler for STATUS_UNKNOWN_HANDLER.
func (e *GuestError) Is(target error) bool {
	return target == ErrGuest || (target == ErrUnknownHandler && e.Status == abi.StatusUnknownHandler)
}

// CallerEnded reports whether err is an operation ended by its caller: the caller's context
// was cancelled (ErrCanceled wrapping context.Canceled) or reached its deadline (a
// *DeadlineError with Caller set) while the operation ran. Such an error is fatal (the
// interrupted instance cannot be resumed) but says nothing against the guest: the instance
// did not fail, it was abandoned. A Kill (ErrCanceled without context.Canceled) and the
// instance's own deadline are not caller ends.
func CallerEnded(err error) bool {
	var de *DeadlineError
	if errors.As(err, &de) {
		return de.Caller
	}
	return errors.Is(err, ErrCanceled) && errors.Is(err, context.Canceled)
}

// Fatal reports whether err ends the instance that returned it: after such an error the
// instance is never entered again and must be replaced.
func Fatal(err error) bool {
	return errors.Is(err, ErrTrap) || errors.Is(err, ErrDeadline) || errors.Is(err, ErrMemoryLimit) ||
		errors.Is(err, ErrExit) || errors.Is(err, ErrABIViolation) || errors.Is(err, ErrCanceled)
}
