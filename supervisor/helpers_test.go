package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/internal/fakeclock"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBoom = errors.New("boom")

// fakeChild is a Child with no goroutine: the test decides when it exits.
type fakeChild struct {
	h    *harness
	id   string
	done chan struct{}
	once sync.Once
	err  error
	// onStop decides what Stop does; nil exits with ErrShutdown.
	onStop func(c *fakeChild)
	onDone doneNotice // see notifyingChild
}

// doneNotice is what a fake Notifier keeps of OnDone's function: whichever of the end and
// OnDone comes second calls it, once.
type doneNotice struct{ f atomic.Pointer[func()] }

// register is OnDone for a child whose end closes done.
func (n *doneNotice) register(done <-chan struct{}, f func()) {
	n.f.Store(&f)
	select {
	case <-done:
		if n.f.CompareAndSwap(&f, nil) {
			f()
		}
	default:
	}
}

// fire is called once done is closed.
func (n *doneNotice) fire() {
	if f := n.f.Swap(nil); f != nil {
		(*f)()
	}
}

func (c *fakeChild) exit(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		c.onDone.fire()
	})
}

// notifyingChild is a fakeChild that is a supervisor.Notifier (harness.notify): the
// supervisor learns of its end from exit, with no watcher goroutine.
type notifyingChild struct{ *fakeChild }

func (c notifyingChild) OnDone(f func())   { c.onDone.register(c.done, f) }
func (c *fakeChild) Done() <-chan struct{} { return c.done }
func (c *fakeChild) Err() error            { return c.err }
func (c *fakeChild) Stop() {
	c.h.logf("stop %s", c.id)
	if c.onStop != nil {
		c.onStop(c)
		return
	}
	c.exit(supervisor.ErrShutdown)
}
func (c *fakeChild) Kill() { c.h.logf("kill %s", c.id); c.exit(supervisor.ErrKilled) }

// harness records a supervisor's children, log and events. Tests run in a
// synctest bubble with a fake clock, and synctest.Wait replaces any sleep.
type harness struct {
	t   *testing.T
	clk *fakeclock.Clock
	s   *supervisor.Supervisor

	mu       sync.Mutex
	log      []string
	events   []supervisor.Event
	cur      map[string]*fakeChild
	failNext map[string][]error          // errors returned by the next Starts
	onStop   map[string]func(*fakeChild) // stop behaviour for new incarnations
	startCtx map[string]func(ctx context.Context) error
	notify   bool // children are supervisor.Notifiers
}

func newHarness(t *testing.T) *harness {
	return &harness{
		t: t, clk: fakeclock.New(),
		cur:      map[string]*fakeChild{},
		failNext: map[string][]error{},
		onStop:   map[string]func(*fakeChild){},
		startCtx: map[string]func(context.Context) error{},
	}
}

func (h *harness) logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

// takeLog returns and clears the log.
func (h *harness) takeLog() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.log
	h.log = nil
	return l
}

func (h *harness) hook(e supervisor.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *harness) takeEvents() []supervisor.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.events
	h.events = nil
	return e
}

func kinds(evs []supervisor.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind.String()+" "+e.Child)
	}
	return out
}

// spec returns a spec whose incarnations are fakeChildren.
func (h *harness) spec(id string, mods ...func(*supervisor.Spec)) supervisor.Spec {
	sp := supervisor.Spec{ID: id, Start: func(ctx context.Context) (supervisor.Child, error) {
		h.mu.Lock()
		var err error
		if q := h.failNext[id]; len(q) > 0 {
			err, h.failNext[id] = q[0], q[1:]
		}
		block := h.startCtx[id]
		onStop := h.onStop[id]
		h.mu.Unlock()
		if block != nil {
			if err := block(ctx); err != nil {
				h.logf("start %s failed", id)
				return nil, err
			}
		}
		if err != nil {
			h.logf("start %s failed", id)
			return nil, err
		}
		c := &fakeChild{h: h, id: id, done: make(chan struct{}), onStop: onStop}
		h.mu.Lock()
		h.cur[id] = c
		h.log = append(h.log, "start "+id)
		notify := h.notify
		h.mu.Unlock()
		if notify {
			return notifyingChild{c}, nil
		}
		return c, nil
	}}
	for _, m := range mods {
		m(&sp)
	}
	return sp
}

// crash makes the current incarnation of id exit with reason and waits
// until the supervisor has reacted.
func (h *harness) crash(id string, reason error) {
	h.t.Helper()
	h.mu.Lock()
	c := h.cur[id]
	h.mu.Unlock()
	if c == nil {
		h.t.Fatalf("no incarnation of %q", id)
	}
	c.exit(reason)
	synctest.Wait()
}

func (h *harness) failStart(id string, errs ...error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failNext[id] = append(h.failNext[id], errs...)
}

func (h *harness) setOnStop(id string, f func(*fakeChild)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onStop[id] = f
}

// start builds and starts a supervisor with the harness's clock and hook.
func (h *harness) start(cfg supervisor.Config, specs ...supervisor.Spec) *supervisor.Supervisor {
	h.t.Helper()
	s := h.build(cfg, specs...)
	if err := s.Start(context.Background()); err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	synctest.Wait()
	return s
}

func (h *harness) build(cfg supervisor.Config, specs ...supervisor.Spec) *supervisor.Supervisor {
	h.t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = h.clk
	}
	if cfg.EventHook == nil {
		cfg.EventHook = h.hook
	}
	if cfg.Name == "" {
		cfg.Name = "root"
	}
	s, err := supervisor.New(cfg, specs...)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.s = s
	h.t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// stop stops the supervisor from the test goroutine, advancing the fake
// clock if it waits for timers.
func (h *harness) stop() {
	h.t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.s.Stop(context.Background()) }()
	for {
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				h.t.Fatalf("Stop: %v", err)
			}
			return
		default:
		}
		if h.clk.Pending() == 0 {
			h.t.Fatalf("Stop is blocked with no timer pending")
		}
		h.clk.Advance(supervisor.DefaultShutdown)
	}
}

// states returns "id:state" for each child, in start order.
func (h *harness) states() []string {
	h.t.Helper()
	cs, err := h.s.Children(context.Background())
	if err != nil {
		h.t.Fatalf("Children: %v", err)
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.ID+":"+c.State.String())
	}
	return out
}

func (h *harness) info(id string) supervisor.ChildInfo {
	h.t.Helper()
	cs, err := h.s.Children(context.Background())
	if err != nil {
		h.t.Fatalf("Children: %v", err)
	}
	for _, c := range cs {
		if c.ID == id {
			return c
		}
	}
	h.t.Fatalf("no child %q", id)
	return supervisor.ChildInfo{}
}

func bubble(t *testing.T, f func(t *testing.T, h *harness)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) { f(t, newHarness(t)) })
}

func wantLog(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("log:\n got  %s\n want %s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func temporary(sp *supervisor.Spec) { sp.Restart = supervisor.Temporary }
func transient(sp *supervisor.Spec) { sp.Restart = supervisor.Transient }
func dependsOn(ids ...string) func(*supervisor.Spec) {
	return func(sp *supervisor.Spec) { sp.DependsOn = ids }
}
