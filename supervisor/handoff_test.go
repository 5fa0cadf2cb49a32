package supervisor_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// goid is the calling goroutine's number, from its stack header.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	n, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return n
}

// reporting wraps a spec's Start to send to log, once it has started the child, its ID and
// whether it ran on goroutine on ("here") or on another one ("loop").
func reporting(on *atomic.Uint64, log chan<- string) func(*supervisor.Spec) {
	return func(sp *supervisor.Spec) {
		start := sp.Start
		sp.Start = func(ctx context.Context) (supervisor.Child, error) {
			c, err := start(ctx)
			if err == nil {
				where := "loop"
				if goid() == on.Load() {
					where = "here"
				}
				log <- sp.ID + " " + where
			}
			return c, err
		}
	}
}

// TestRestartWithoutHandOff: the end of a Notifier child that finds its supervisor idle is
// handled on the goroutine that reports it when the handling is that child's own restart,
// within the intensity: the successor has started when the report returns. Every other
// end (one that stops other children, gives up at the intensity, retires the child) is the
// loop's, on its own goroutine, as it is for a child watched by a goroutine.
func TestRestartWithoutHandOff(t *testing.T) {
	cases := []struct {
		name     string
		cfg      supervisor.Config
		b        []func(*supervisor.Spec) // b's options; a is permanent
		a        func(*supervisor.Spec)
		reason   error
		restarts bool // a is restarted
		here     bool // ... on the reporting goroutine
	}{
		{"one_for_one", supervisor.Config{}, nil, nil, errBoom, true, true},
		{"dynamic", supervisor.Config{Strategy: supervisor.Dynamic}, nil, nil, errBoom, true, true},
		{"replaced", supervisor.Config{}, nil, nil, supervisor.ErrReplaced, true, true},
		{"transient_crash", supervisor.Config{}, nil, transient, errBoom, true, true},
		{"dependent", supervisor.Config{}, []func(*supervisor.Spec){dependsOn("a")}, nil, errBoom, true, false},
		{"one_for_all", supervisor.Config{Strategy: supervisor.OneForAll}, nil, nil, errBoom, true, false},
		{"rest_for_one", supervisor.Config{Strategy: supervisor.RestForOne}, nil, nil, errBoom, true, false},
		{"transient_normal", supervisor.Config{}, nil, transient, supervisor.ErrNormal, false, false},
		{"temporary", supervisor.Config{}, nil, temporary, errBoom, false, false},
		{"watched", supervisor.Config{}, nil, nil, errBoom, true, false}, // not a Notifier
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bubble(t, func(t *testing.T, h *harness) {
				h.notify = c.name != "watched"
				var on atomic.Uint64
				log := make(chan string, 16)
				aOpts := []func(*supervisor.Spec){reporting(&on, log)}
				if c.a != nil {
					aOpts = append(aOpts, c.a)
				}
				h.start(c.cfg, h.spec("a", aOpts...), h.spec("b", append(c.b, reporting(&on, log))...))
				drain(log)
				h.takeLog()
				h.mu.Lock()
				a := h.cur["a"]
				h.mu.Unlock()
				on.Store(goid())
				a.exit(c.reason)
				early := drain(log) // what started before exit returned
				synctest.Wait()     // the loop's goroutine may start a child meanwhile, or later
				got := append(early, drain(log)...)
				on.Store(0)
				switch {
				case c.here:
					wantLog(t, early, "a here")
					wantLog(t, got, "a here")
				case c.restarts:
					if len(got) == 0 || got[0] != "a loop" {
						t.Fatalf("restarted: %v, want a by the loop's goroutine", got)
					}
					for _, g := range got {
						if strings.HasSuffix(g, " here") {
							t.Fatalf("started on the reporting goroutine: %v", got)
						}
					}
				default:
					wantLog(t, got)
				}
				h.stop()
			})
		})
	}
}

// TestRestartWithoutHandOffWaitsForTheLoop: an end that finds the loop busy (running a
// method's work) or finds an earlier end queued is queued behind it, in order; the one
// that gives up at the intensity is the loop's: the supervisor exits from there.
func TestRestartWithoutHandOffWaitsForTheLoop(t *testing.T) {
	bubble(t, func(t *testing.T, h *harness) {
		h.notify = true
		var on atomic.Uint64
		log := make(chan string, 16)
		h.start(supervisor.Config{Intensity: 2}, h.spec("a", reporting(&on, log)))
		drain(log)
		release := make(chan struct{})
		h.mu.Lock()
		h.startCtx["x"] = func(ctx context.Context) error { <-release; return nil }
		h.mu.Unlock()
		added := make(chan error, 1)
		go func() {
			_, err := h.s.StartChild(context.Background(), h.spec("x"))
			added <- err
		}()
		synctest.Wait() // the loop runs x's Start, which waits for release

		h.mu.Lock()
		a := h.cur["a"]
		h.mu.Unlock()
		on.Store(goid())
		a.exit(errBoom)
		wantLog(t, drain(log)) // queued: the loop holds its turn
		on.Store(0)
		close(release)
		if err := <-added; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		wantLog(t, drain(log), "a loop")

		// The second restart fits the intensity (2) and is handled here; the third does not,
		// and is the loop's: it gives up, and the supervisor exits.
		h.mu.Lock()
		a = h.cur["a"]
		h.mu.Unlock()
		on.Store(goid())
		a.exit(errBoom)
		wantLog(t, drain(log), "a here")
		h.mu.Lock()
		a = h.cur["a"]
		h.mu.Unlock()
		a.exit(errBoom)
		wantLog(t, drain(log))
		on.Store(0)
		synctest.Wait()
		<-h.s.Done()
		var ie *supervisor.IntensityError
		if !errors.As(h.s.Err(), &ie) {
			t.Fatalf("exit reason %v, want an IntensityError", h.s.Err())
		}
	})
}

func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case s := <-ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

// TestEndNoticeRacesStop: a Notifier child that ignores Stop and Kill is abandoned by its
// supervisor's stop, and ends from another goroutine while the stop finishes, again and
// again: the end notice finds the loop gone or going, and neither it nor the stop touches
// the supervisor's state without the turn (the race detector is the check).
func TestEndNoticeRacesStop(t *testing.T) {
	for range 300 {
		var c atomic.Pointer[notifyingBench]
		s, err := supervisor.New(supervisor.Config{Intensity: 1 << 20, KillTimeout: time.Microsecond},
			supervisor.Spec{ID: "a", Shutdown: time.Microsecond, Start: func(context.Context) (supervisor.Child, error) {
				n := &notifyingBench{done: make(chan struct{}), deaf: true}
				c.Store(n)
				return n, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			<-s.Done()
			c.Load().end(errBoom)
		}()
		s.RequestStop()
		go func() { c.Load().end(errBoom) }() // also while the stop runs
		<-ended
	}
}

// notifyingBench is a Notifier with no goroutine and no harness (TestEndNoticeRacesStop,
// BenchmarkRestartNotifier); the harness's is notifyingChild.
type notifyingBench struct {
	deaf   bool // Stop and Kill do nothing
	done   chan struct{}
	once   sync.Once
	err    error
	onDone doneNotice
}

func (c *notifyingBench) Done() <-chan struct{} { return c.done }
func (c *notifyingBench) Err() error            { return c.err }
func (c *notifyingBench) Stop() {
	if !c.deaf {
		c.end(supervisor.ErrShutdown)
	}
}

func (c *notifyingBench) Kill() {
	if !c.deaf {
		c.end(supervisor.ErrKilled)
	}
}
func (c *notifyingBench) OnDone(f func()) { c.onDone.register(c.done, f) }

func (c *notifyingBench) end(err error) {
	ended := false
	c.once.Do(func() {
		c.err = err
		close(c.done)
		ended = true
	})
	if ended {
		c.onDone.fire()
	}
}
