package sandbox

import (
	"context"
	"errors"
)

// Error kinds: the names Kind gives an error, one per sentinel of this package. They are the
// one vocabulary of wasmvisor's error kinds: the host's metric label
// (wasmvisor_call_errors_total{kind}), the `kind` of the server's JSON errors and
// Wasmvisor-Plugin-Error header, and the `kind` of a `wasmvisor test` cases file all use
// them. The host adds kinds of its own (host.Kind). Names are snake_case and stable.
const (
	KindGuest          = "guest"           // ErrGuest: the guest returned an error status
	KindUnknownHandler = "unknown_handler" // ErrUnknownHandler: no such handler (host or guest said so)
	KindTrap           = "trap"            // ErrTrap: the guest trapped or aborted
	KindDeadline       = "deadline"        // ErrDeadline: a call or the start ran past its deadline
	KindMemoryLimit    = "memory_limit"    // ErrMemoryLimit: the guest needed more memory than allowed
	KindExit           = "exit"            // ErrExit: the guest called proc_exit
	KindABIViolation   = "abi_violation"   // ErrABIViolation: a bad pointer, length, status or store
	KindCanceled       = "canceled"        // ErrCanceled or context.Canceled: the caller or Kill ended it
	KindNotEntered     = "not_entered"     // ErrNotEntered: the context ended before the operation entered
	KindBusy           = "busy"            // ErrBusy: the instance was serving another call
	KindRetired        = "retired"         // ErrRetired: the instance served its last operation
	KindClosed         = "closed"          // ErrClosed: the instance, module or engine is closed
	KindInvalidModule  = "invalid_module"  // ErrInvalidModule: not a module wazero can compile or limit
	KindInvalidABI     = "invalid_abi"     // ErrABI: the module does not follow ABI v1
	KindInvalidConfig  = "invalid_config"  // ErrInvalidConfig: a limit, capability or option cannot be honoured
	KindReadBudget     = "read_budget"     // ErrReadBudget: a store read did not fit its budget
	KindOther          = "other"           // anything else
)

// Kind names the kind of err, one of the Kind constants, and "" for a nil err. An error
// that matches several sentinels gets the most specific kind, in this order: memory limit
// (it may wrap the trap that revealed it), deadline, exit, ABI violation, trap, unknown
// handler (a *GuestError with STATUS_UNKNOWN_HANDLER included), guest, not entered (before
// canceled: a *NotEnteredError also matches its context's error), canceled, then the
// instance and load errors. An error that wraps no sentinel of this package is KindOther,
// except context.Canceled (KindCanceled) and context.DeadlineExceeded (KindDeadline).
// An *UnavailableError has the kind of the error that ended its instance.
func Kind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMemoryLimit):
		return KindMemoryLimit
	case errors.Is(err, ErrDeadline):
		return KindDeadline
	case errors.Is(err, ErrExit):
		return KindExit
	case errors.Is(err, ErrABIViolation):
		return KindABIViolation
	case errors.Is(err, ErrTrap):
		return KindTrap
	case errors.Is(err, ErrUnknownHandler):
		return KindUnknownHandler
	case errors.Is(err, ErrGuest):
		return KindGuest
	case errors.Is(err, ErrNotEntered):
		return KindNotEntered
	case errors.Is(err, ErrCanceled), errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, ErrBusy):
		return KindBusy
	case errors.Is(err, ErrRetired):
		return KindRetired
	case errors.Is(err, ErrClosed):
		return KindClosed
	case errors.Is(err, ErrInvalidModule):
		return KindInvalidModule
	case errors.Is(err, ErrABI):
		return KindInvalidABI
	case errors.Is(err, ErrInvalidConfig):
		return KindInvalidConfig
	case errors.Is(err, ErrReadBudget):
		return KindReadBudget
	case errors.Is(err, context.DeadlineExceeded):
		return KindDeadline
	}
	return KindOther
}
