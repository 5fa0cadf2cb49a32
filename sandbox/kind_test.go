package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestKind covers every kind: each typed error of the package, as returned and wrapped, and
// the errors that match more than one sentinel.
func TestKind(t *testing.T) {
	trap := &sandbox.TrapError{Kind: sandbox.TrapUnreachable}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"guest", &sandbox.GuestError{Status: abi.StatusError, Message: "no"}, sandbox.KindGuest},
		{"unknown handler", sandbox.ErrUnknownHandler, sandbox.KindUnknownHandler},
		{"guest unknown handler", &sandbox.GuestError{Status: abi.StatusUnknownHandler}, sandbox.KindUnknownHandler},
		{"trap", trap, sandbox.KindTrap},
		{"deadline", &sandbox.DeadlineError{Op: "call", Timeout: "50ms"}, sandbox.KindDeadline},
		{"caller deadline", &sandbox.DeadlineError{Op: "call", Timeout: "context deadline", Caller: true}, sandbox.KindDeadline},
		{"memory limit", &sandbox.MemoryLimitError{LimitPages: 4, Cause: trap}, sandbox.KindMemoryLimit},
		{"exit", &sandbox.ExitError{Code: 3}, sandbox.KindExit},
		{"abi violation", &sandbox.ViolationError{Reason: "bad pointer"}, sandbox.KindABIViolation},
		{"canceled", fmt.Errorf("call: %w: %w", sandbox.ErrCanceled, context.Canceled), sandbox.KindCanceled},
		{"killed", sandbox.ErrCanceled, sandbox.KindCanceled},
		{"context canceled", context.Canceled, sandbox.KindCanceled},
		{"context deadline", context.DeadlineExceeded, sandbox.KindDeadline},
		{"not entered, canceled", &sandbox.NotEnteredError{Op: "call", Err: context.Canceled}, sandbox.KindNotEntered},
		{"not entered, deadline", &sandbox.NotEnteredError{Op: "call", Err: context.DeadlineExceeded}, sandbox.KindNotEntered},
		{"busy", sandbox.ErrBusy, sandbox.KindBusy},
		{"retired", fmt.Errorf("sandbox: instance: %w", sandbox.ErrRetired), sandbox.KindRetired},
		{"unavailable after a trap", &sandbox.UnavailableError{Err: trap}, sandbox.KindTrap},
		{"closed", sandbox.ErrClosed, sandbox.KindClosed},
		{"invalid module", &sandbox.ModuleError{Reason: "bad magic"}, sandbox.KindInvalidModule},
		{"invalid abi", &sandbox.ABIError{Problems: []sandbox.Problem{{Kind: sandbox.Missing, What: "export", Name: "wv_call"}}}, sandbox.KindInvalidABI},
		{"invalid config", fmt.Errorf("limits: %w", sandbox.ErrInvalidConfig), sandbox.KindInvalidConfig},
		{"read budget", sandbox.ErrReadBudget, sandbox.KindReadBudget},
		{"other", errors.New("something else"), sandbox.KindOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sandbox.Kind(tc.err); got != tc.want {
				t.Errorf("Kind(%v) = %q, want %q", tc.err, got, tc.want)
			}
			if tc.err != nil {
				if got := sandbox.Kind(fmt.Errorf("plugin %q: call %q: %w", "p", "h", tc.err)); got != tc.want {
					t.Errorf("Kind(wrapped %v) = %q, want %q", tc.err, got, tc.want)
				}
			}
		})
	}
}
