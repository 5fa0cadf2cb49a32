package supervisor

import (
	"context"
	"fmt"
)

// Handle refers to one incarnation of a child. Once that incarnation has
// ended, every method fails fast with ErrStaleHandle: a handle never reaches
// the incarnation that replaced it. The zero Handle is stale. Handles are
// values, safe for concurrent use.
type Handle struct {
	s   *Supervisor
	inc *incarnation
}

// ID returns the child's ID ("" for the zero Handle).
func (h Handle) ID() string {
	if h.inc == nil {
		return ""
	}
	return h.inc.id
}

// Incarnation returns the incarnation number: unique within the supervisor,
// increasing, never reused; 0 for the zero Handle.
func (h Handle) Incarnation() uint64 {
	if h.inc == nil {
		return 0
	}
	return h.inc.n
}

// Child returns the incarnation's Child (for example to type-assert to the
// host's instance type), or ErrStaleHandle once it has ended. It does not
// talk to the supervisor.
func (h Handle) Child() (Child, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	return h.inc.child, nil
}

// Done is closed when the incarnation has ended (nil for the zero Handle).
func (h Handle) Done() <-chan struct{} {
	if h.inc == nil {
		return nil
	}
	return h.inc.child.Done()
}

// Terminate terminates the child, as Supervisor.TerminateChild does, only
// if this incarnation is still the current one; otherwise it returns
// ErrStaleHandle and leaves the successor alone. As with TerminateChild,
// ErrStopped or ctx's error means nothing was stopped.
func (h Handle) Terminate(ctx context.Context) error {
	if err := h.check(); err != nil {
		return err
	}
	var err error
	if cerr := h.s.call(ctx, func() { err = h.s.doTerminate(h.inc.id, h.inc) }); cerr != nil {
		return cerr
	}
	return err
}

func (h Handle) check() error {
	if h.inc == nil {
		return fmt.Errorf("supervisor: zero handle: %w", ErrStaleHandle)
	}
	stale := h.inc.ended.Load()
	if !stale {
		select {
		case <-h.inc.child.Done():
			stale = true
		default:
		}
	}
	if stale {
		return fmt.Errorf("supervisor: child %q incarnation %d has ended: %w", h.inc.id, h.inc.n, ErrStaleHandle)
	}
	return nil
}
