package supervisor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// stubborn is a child that ignores Stop and Kill until released, like a goroutine blocked in
// code that never looks at its context.
type stubborn struct {
	done    chan struct{}
	release chan struct{}
}

func newStubborn() *stubborn {
	c := &stubborn{done: make(chan struct{}), release: make(chan struct{})}
	go func() { <-c.release; close(c.done) }()
	return c
}

func (c *stubborn) Done() <-chan struct{} { return c.done }
func (c *stubborn) Err() error            { return supervisor.ErrKilled }
func (c *stubborn) Stop()                 {}
func (c *stubborn) Kill()                 {}

// A child that ignores Kill does not hang its supervisor: after KillTimeout it is abandoned,
// reported with ErrUnstopped and counted, and the stop completes. Under every strategy.
func TestChildIgnoringKillIsAbandoned(t *testing.T) {
	for _, strategy := range []supervisor.Strategy{supervisor.OneForOne, supervisor.Dynamic} {
		t.Run(strategy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				var mu sync.Mutex
				var reported []error
				child := newStubborn()
				spec := supervisor.Spec{ID: "stubborn", Shutdown: time.Second,
					Start: func(context.Context) (supervisor.Child, error) { return child, nil }}
				cfg := supervisor.Config{Strategy: strategy, KillTimeout: 3 * time.Second, EventHook: func(e supervisor.Event) {
					if e.Kind == supervisor.EventShutdownError {
						mu.Lock()
						reported = append(reported, e.Err)
						mu.Unlock()
					}
				}}
				var s *supervisor.Supervisor
				var err error
				if strategy == supervisor.Dynamic {
					s, err = supervisor.New(cfg)
				} else {
					s, err = supervisor.New(cfg, spec)
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Start(ctx); err != nil {
					t.Fatal(err)
				}
				if strategy == supervisor.Dynamic {
					if _, err := s.StartChild(ctx, spec); err != nil {
						t.Fatal(err)
					}
				}
				start := time.Now()
				if err := s.Stop(ctx); err != nil {
					t.Fatalf("Stop: %v", err)
				}
				// Shutdown timeout (1s), then KillTimeout (3s), on the bubble's clock.
				if d := time.Since(start); d != 4*time.Second {
					t.Errorf("Stop took %v, want 4s", d)
				}
				if n := s.Unstopped(); n != 1 {
					t.Errorf("Unstopped = %d, want 1", n)
				}
				mu.Lock()
				if len(reported) != 1 || !errors.Is(reported[0], supervisor.ErrUnstopped) {
					t.Errorf("reported %v, want one ErrUnstopped", reported)
				}
				mu.Unlock()
				close(child.release) // let the abandoned goroutine end: goleak checks the package
				<-child.done
			})
		})
	}
}

func TestKillTimeoutValidation(t *testing.T) {
	if _, err := supervisor.New(supervisor.Config{KillTimeout: -time.Second}); !errors.Is(err, supervisor.ErrInvalidSpec) {
		t.Fatalf("negative KillTimeout: %v", err)
	}
}
