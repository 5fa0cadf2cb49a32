package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// TaskOptions configures a task started with [Go].
type TaskOptions struct {
	// ID names the task; optional under a Dynamic supervisor.
	ID string
	// Retry restarts the task after a failure (Transient), under the
	// supervisor's intensity, until it succeeds. By default a task is
	// Temporary: it runs once.
	Retry bool
	// Backoff delays retries.
	Backoff Backoff
	// Shutdown is as in Spec; default DefaultShutdown.
	Shutdown time.Duration
}

// Task is a supervised function with an awaitable result. Its caller
// always gets a completion: Wait returns once the task has succeeded,
// failed for good, been cancelled, or its supervisor stopped.
type Task[T any] struct {
	s    *Supervisor
	id   string
	done chan struct{}
	once sync.Once
	val  T
	err  error
}

// Go runs fn as a supervised task under s, usually a Dynamic supervisor
// used as a task group. fn's context is cancelled when the task is
// cancelled or the supervisor stops; a task never outlives its supervisor.
// A failed attempt is retried only with Retry.
func Go[T any](ctx context.Context, s *Supervisor, opts TaskOptions, fn func(ctx context.Context) (T, error)) (*Task[T], error) {
	t := &Task[T]{s: s, done: make(chan struct{})}
	restart := Temporary
	if opts.Retry {
		restart = Transient
	}
	spec := Spec{
		ID:       opts.ID,
		Restart:  restart,
		Backoff:  opts.Backoff,
		Shutdown: opts.Shutdown,
		Start: Func(func(ctx context.Context, ready func()) error {
			ready()
			v, err := fn(ctx)
			if err == nil {
				t.val = v // read by finish after the exit is observed
			}
			return err
		}),
		final: t.finish,
	}
	h, err := s.StartChild(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("supervisor %q: task %q: %w", s.name, opts.ID, err)
	}
	t.id = h.ID()
	return t, nil
}

func (t *Task[T]) finish(reason error) {
	t.once.Do(func() {
		if Classify(reason) != ExitNormal {
			t.err = reason
		}
		close(t.done)
	})
}

// Done is closed when the task has completed for good.
func (t *Task[T]) Done() <-chan struct{} { return t.done }

// Wait waits for the task's completion and returns its result, or its last
// error (ErrShutdown if it was cancelled or its supervisor stopped, an
// *IntensityError if its supervisor gave up).
func (t *Task[T]) Wait(ctx context.Context) (T, error) {
	select {
	case <-t.done:
		return t.val, t.err
	case <-ctx.Done():
		var zero T
		return zero, context.Cause(ctx)
	}
}

// Cancel stops the task (its context is cancelled) and waits for it to
// end. Cancelling a finished task does nothing.
func (t *Task[T]) Cancel(ctx context.Context) error {
	err := t.s.TerminateChild(ctx, t.id)
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	if errors.Is(err, ErrStopped) {
		select {
		case <-t.done:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return err
}
