package host_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestKind covers every host kind, the order of the refusals before the sandbox's kinds, and
// the fallback to sandbox.Kind.
func TestKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"quarantined", fmt.Errorf("plugin %q: %w: %w", "p", host.ErrPluginFailed, &sandbox.TrapError{Kind: sandbox.TrapUnreachable}), host.KindQuarantined},
		{"poison input", host.ErrPoisonInput, host.KindPoisonInput},
		{"no instance", fmt.Errorf("%w: %w", host.ErrNoInstance, context.DeadlineExceeded), host.KindNoInstance},
		{"not found", host.ErrNotFound, host.KindNotFound},
		{"closed", host.ErrClosed, host.KindClosed},
		{"already loaded", host.ErrAlreadyLoaded, host.KindAlreadyLoaded},
		{"dependency", host.ErrDependency, host.KindDependency},
		{"invalid plugin", host.ErrInvalidPlugin, host.KindInvalidPlugin},
		{"series limit", host.ErrSeriesLimit, host.KindSeriesLimit},
		{"leak", host.ErrLeak, host.KindLeak},
		{"stale", host.ErrStale, host.KindStale},
		{"sandbox memory limit", &sandbox.MemoryLimitError{LimitPages: 2}, sandbox.KindMemoryLimit},
		{"sandbox abi violation", &sandbox.ViolationError{Reason: "x"}, sandbox.KindABIViolation},
		{"closed with a sandbox cause", fmt.Errorf("%w: %w", host.ErrClosed, &sandbox.ModuleError{Reason: "x"}), sandbox.KindInvalidModule},
		{"other", errors.New("x"), sandbox.KindOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := host.Kind(tc.err); got != tc.want {
				t.Errorf("Kind(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
