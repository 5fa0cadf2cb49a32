package supervisor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

type startResult struct {
	h   supervisor.Handle
	err error
}

func (h *harness) child(id string) *fakeChild {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur[id]
}

// TestCallNeverFailsAfterRunning drives the race between a caller's ctx
// and an operation the loop has already taken: the caller gets the
// operation's own result, or an error that means it did not run, never a
// failure for something that happened.
func TestCallNeverFailsAfterRunning(t *testing.T) {
	t.Run("StartSucceedsAfterCallerCtxEnds", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{})
			entered, proceed := make(chan struct{}), make(chan struct{})
			h.startCtx["a"] = func(ctx context.Context) error {
				close(entered)
				<-ctx.Done() // the caller's end reaches Start, which succeeds anyway
				<-proceed
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			res := make(chan startResult, 1)
			go func() {
				hd, err := s.StartChild(ctx, h.spec("a"))
				res <- startResult{hd, err}
			}()
			<-entered
			cancel()
			synctest.Wait() // the caller has seen ctx end; Start has not returned
			close(proceed)
			r := <-res
			if r.err != nil {
				t.Fatalf("StartChild = %v, but the child was started: %v", r.err, h.states())
			}
			if _, err := r.h.Child(); err != nil {
				t.Fatalf("handle: %v", err)
			}
			wantLog(t, h.states(), "a:running")
			h.stop()
		})
	})
	t.Run("StartFailsOnCallerCtx", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{})
			entered := make(chan struct{})
			h.startCtx["a"] = func(ctx context.Context) error {
				close(entered)
				<-ctx.Done()
				return context.Cause(ctx)
			}
			ctx, cancel := context.WithCancel(context.Background())
			res := make(chan startResult, 1)
			go func() {
				hd, err := s.StartChild(ctx, h.spec("a"))
				res <- startResult{hd, err}
			}()
			<-entered
			cancel()
			r := <-res
			var se *supervisor.StartError
			if !errors.As(r.err, &se) || !errors.Is(r.err, context.Canceled) {
				t.Fatalf("StartChild = %v, want a *StartError wrapping context.Canceled", r.err)
			}
			wantLog(t, h.states()) // the spec was not kept
			h.stop()
		})
	})
	t.Run("NotTakenIsNotRun", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{})
			release := make(chan struct{})
			h.startCtx["a"] = func(context.Context) error { <-release; return nil }
			resA := make(chan startResult, 1)
			go func() {
				hd, err := s.StartChild(context.Background(), h.spec("a"))
				resA <- startResult{hd, err}
			}()
			synctest.Wait() // the loop is inside a's Start
			ctx, cancel := context.WithCancel(context.Background())
			resB := make(chan startResult, 1)
			go func() {
				hd, err := s.StartChild(ctx, h.spec("b"))
				resB <- startResult{hd, err}
			}()
			synctest.Wait() // b waits for the busy loop
			cancel()
			rb := <-resB
			wantErr(t, rb.err, context.Canceled)
			close(release)
			if ra := <-resA; ra.err != nil {
				t.Fatalf("StartChild(a) = %v", ra.err)
			}
			wantLog(t, h.takeLog(), "start a") // b's Start never ran
			wantLog(t, h.states(), "a:running")
			h.stop()
		})
	})
	t.Run("TerminateCompletesAfterCallerCtxEnds", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			stopping := make(chan struct{})
			h.setOnStop("a", func(*fakeChild) { close(stopping) }) // ends when the test says
			s := h.start(supervisor.Config{}, h.spec("a"))
			ctx, cancel := context.WithCancel(context.Background())
			res := make(chan error, 1)
			go func() { res <- s.TerminateChild(ctx, "a") }()
			<-stopping
			cancel()
			synctest.Wait()
			select {
			case err := <-res:
				t.Fatalf("TerminateChild returned %v before the child ended", err)
			default:
			}
			h.child("a").exit(supervisor.ErrShutdown)
			if err := <-res; err != nil {
				t.Fatalf("TerminateChild = %v, but the child was stopped", err)
			}
			wantLog(t, h.states(), "a:stopped")
			h.stop()
		})
	})
	t.Run("StopRequestedDuringStart", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{})
			entered := make(chan struct{})
			h.startCtx["a"] = func(ctx context.Context) error {
				close(entered)
				<-ctx.Done() // the supervisor's stop reaches Start, which succeeds anyway
				return nil
			}
			res := make(chan startResult, 1)
			go func() {
				hd, err := s.StartChild(context.Background(), h.spec("a"))
				res <- startResult{hd, err}
			}()
			<-entered
			s.RequestStop()
			r := <-res
			if r.err != nil || r.h.ID() != "a" {
				t.Fatalf("StartChild = %v %v, but the child was started", r.h, r.err)
			}
			<-s.Done()
			wantErr(t, s.Err(), supervisor.ErrShutdown)
			wantLog(t, h.takeLog(), "start a", "stop a") // started, then stopped with the supervisor
		})
	})
}

func TestRequestStop(t *testing.T) {
	t.Run("ReturnsAtOnce", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			h.setOnStop("a", func(*fakeChild) {}) // ignores Stop until the test ends it
			s := h.start(supervisor.Config{}, h.spec("a"))
			s.RequestStop()
			synctest.Wait()
			select {
			case <-s.Done():
				t.Fatal("Done closed while a child is still stopping")
			default:
			}
			if err := s.Err(); err != nil {
				t.Fatalf("Err while stopping = %v", err)
			}
			if _, err := s.StartChild(context.Background(), h.spec("b")); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatalf("StartChild after RequestStop = %v", err)
			}
			s.RequestStop() // idempotent
			h.child("a").exit(supervisor.ErrShutdown)
			<-s.Done()
			wantErr(t, s.Err(), supervisor.ErrShutdown)
			wantLog(t, h.takeLog(), "start a", "stop a")
		})
	})
	t.Run("BeforeStart", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.build(supervisor.Config{}, h.spec("a"))
			s.RequestStop()
			<-s.Done()
			wantErr(t, s.Err(), supervisor.ErrShutdown)
			wantErr(t, s.Start(context.Background()), supervisor.ErrStopped)
			wantLog(t, h.takeLog())
		})
	})
	t.Run("ConcurrentWithStopAndKill", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			s := h.start(supervisor.Config{}, h.spec("a"), h.spec("b"))
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(s.RequestStop)
			}
			wg.Go(s.Kill)
			wg.Go(func() {
				if err := s.Stop(context.Background()); err != nil {
					t.Errorf("Stop: %v", err)
				}
			})
			wg.Wait()
			<-s.Done()
			if err := s.Err(); !errors.Is(err, supervisor.ErrShutdown) && !errors.Is(err, supervisor.ErrKilled) {
				t.Fatalf("Err = %v", err)
			}
			s.RequestStop() // after the end: nothing
			if _, err := s.Children(context.Background()); !errors.Is(err, supervisor.ErrStopped) {
				t.Fatalf("Children after stop = %v", err)
			}
		})
	})
	t.Run("FromAChild", func(t *testing.T) {
		bubble(t, func(t *testing.T, h *harness) {
			var s *supervisor.Supervisor
			h.startCtx["b"] = func(context.Context) error { s.RequestStop(); return nil }
			s = h.build(supervisor.Config{}, h.spec("a"), h.spec("b"))
			wantErr(t, s.Start(context.Background()), supervisor.ErrStopped)
			<-s.Done()
			wantLog(t, h.takeLog(), "start a", "start b", "stop b", "stop a")
		})
	})
}
