package supervisor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Child is one running incarnation of a child, as returned by a [Spec]
// Start function. It need not be a goroutine: the host wraps a WebAssembly
// instance as a Child, whose exit is a trap or a kill.
//
// The supervisor calls Stop and Kill from its own goroutine; they must not
// block. Done may be called from any goroutine. Err is read only after
// Done is closed.
type Child interface {
	// Done is closed when the incarnation has ended, by itself or after
	// Stop or Kill.
	Done() <-chan struct{}
	// Err is the exit reason once Done is closed: nil or ErrNormal for a
	// normal exit, ErrShutdown (or Shutdown{...}) after a requested stop,
	// anything else for a crash. See Classify.
	Err() error
	// Stop asks the child to stop gracefully. The supervisor then waits for
	// Done up to the spec's Shutdown timeout.
	Stop()
	// Kill ends the child now. Done must close promptly afterwards;
	// a child that cannot guarantee it delays its supervisor's shutdown.
	Kill()
}

// A Notifier is a Child that calls a function when it ends. The supervisor then registers
// its notice of the end with OnDone instead of keeping a goroutine per incarnation that waits
// on Done, and, when it is idle, restarts the child in that function, on the goroutine that
// ended it: the restart costs no goroutine hand-off at all (see Supervisor).
type Notifier interface {
	// OnDone arranges for f to be called once, after Done is closed (at once if it is
	// already). f may run the child's restart, the next incarnation's Start included, so
	// it must be called holding no lock that Start takes; it does not wait for any other
	// goroutine of the supervisor.
	OnDone(f func())
}

// Func adapts a long-running function into a Spec Start function. run
// receives a context that is cancelled (with cause ErrShutdown or
// ErrKilled) when the supervisor stops or kills the child, and must call
// ready once it is initialised; Start returns then. An error returned before
// ready is a start failure; ErrIgnore there skips the child.
//
// Exit reasons: when the child was asked to stop and run returns nil or a
// context.Canceled error, the reason is ErrShutdown (ErrKilled after Kill),
// so that an idiomatic `return ctx.Err()` is a clean stop. Otherwise it is
// run's error as is (a context error from any other context is a crash). A
// panic in run is recovered and becomes an abnormal exit carrying the stack.
//
// A goroutine cannot be forcibly ended: Kill only cancels the context, and a
// function that ignores its context keeps its supervisor waiting.
func Func(run func(ctx context.Context, ready func()) error) func(ctx context.Context) (Child, error) {
	return func(ctx context.Context) (Child, error) {
		c := &funcChild{done: make(chan struct{}), ready: make(chan struct{})}
		lctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		c.cancel = cancel
		go c.run(lctx, run)
		select {
		case <-c.ready:
			return c, nil
		case <-c.done:
			select {
			case <-c.ready:
				return c, nil
			default:
			}
			if c.err != nil {
				return nil, c.err
			}
			return c, nil // finished normally before it was ready
		case <-ctx.Done():
			// A child that was ready as the start was cancelled is started: select picks
			// at random between ready channels, and aborting it here would stop it out of
			// turn (before the children started after it: Example_oneForOne's "stop b"
			// before "stop c", seen under load).
			select {
			case <-c.ready:
				return c, nil
			default:
			}
			cause := context.Cause(ctx)
			c.stopped.Store(true)
			cancel(cause)
			<-c.done
			return nil, cause
		}
	}
}

type funcChild struct {
	done, ready chan struct{}
	readyOnce   sync.Once
	cancel      context.CancelCauseFunc
	stopped     atomic.Bool
	killed      atomic.Bool
	err         error // written before done is closed
}

func (c *funcChild) run(ctx context.Context, f func(context.Context, func()) error) {
	defer close(c.done)
	defer func() {
		if r := recover(); r != nil {
			c.err = fmt.Errorf("supervisor: child panicked: %v\n%s", r, debug.Stack())
		}
	}()
	err := f(ctx, func() { c.readyOnce.Do(func() { close(c.ready) }) })
	if err == nil || errors.Is(err, context.Canceled) {
		switch {
		case c.killed.Load():
			err = ErrKilled
		case c.stopped.Load():
			err = ErrShutdown
		}
	}
	c.err = err
}

func (c *funcChild) Done() <-chan struct{} { return c.done }
func (c *funcChild) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}
func (c *funcChild) Stop() { c.stopped.Store(true); c.cancel(ErrShutdown) }
func (c *funcChild) Kill() { c.killed.Store(true); c.cancel(ErrKilled) }
