package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// State is the state of a child as seen by its supervisor.
type State uint8

const (
	// StateStopped: the spec is kept but no incarnation runs (OTP
	// undefined): a Transient child that exited normally, a terminated
	// child, an ignored start, or a dependent of a stopped dependency.
	StateStopped State = iota
	// StateRunning: an incarnation is ready.
	StateRunning
	// StateRestarting: a restart was decided and the child waits to be
	// started: its own restart failed and will be retried, or it waits for
	// a dependency or sibling to come back.
	StateRestarting
	// StateBackoff: the child waits for its backoff delay to expire.
	StateBackoff
)

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateRunning:
		return "running"
	case StateRestarting:
		return "restarting"
	case StateBackoff:
		return "backoff"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ChildInfo is a snapshot of one child, from [Supervisor.Children].
type ChildInfo struct {
	ID          string
	Type        ChildType
	Restart     RestartType
	State       State
	Incarnation uint64 // the current incarnation, or 0 when not running
	Restarts    int    // incarnations started after the first
	// Replaced counts the restarts (included in Restarts) that followed an
	// exit of the class ExitReplaced: not counted towards the intensity.
	Replaced int
	LastErr  error // the last exit reason or start error
}

// Supervisor supervises children by the OTP rules. Create one with [New],
// run it with [Supervisor.Start] and [Supervisor.Stop] or [Supervisor.Serve].
// A supervisor can be the child of another, so trees nest (see [Subtree]).
//
// All state is owned by an event loop; every method is safe for concurrent
// use and talks to it by message. Methods that can block take a context.
// After Stop, every method returns ErrStopped and none blocks. Child Start
// functions and hooks must not call their own supervisor's blocking methods
// synchronously.
//
// The loop is a turn, not only a goroutine: the end of a Notifier child that
// finds the loop idle, with nothing queued before it, is handled in the
// goroutine that reports it, when the handling is that child's own restart
// within the intensity (see endNotice). Every other event waits for the
// loop's goroutine, in order.
type Supervisor struct {
	cfg    Config
	lim    limits
	name   string
	clock  Clock
	static []Spec

	mu         sync.Mutex // guards the lifecycle fields below
	started    bool
	stopReqd   bool
	cancelBase context.CancelCauseFunc

	base    context.Context // cancelled when the supervisor stops
	stopReq chan struct{}   // closed by Stop/Kill
	killReq atomic.Bool

	unstopped   atomic.Uint64 // children abandoned after KillTimeout
	mbox        chan func()   // API calls
	wake        chan struct{}
	notesMu     sync.Mutex
	notes       []func() // exits and timers, queued without blocking
	notesClosed bool     // under notesMu: the loop has ended, notes are dropped
	loopDone    chan struct{}
	done        chan struct{} // closed when everything, events included, is finished
	exitErr     error         // written by the loop before loopDone is closed
	watchers    sync.WaitGroup

	events    *dispatcher
	ownEvents bool

	// turn is held by whoever runs the loop's work: the loop's goroutine, except while it
	// waits for a message, or a child's end notice handled where it is reported
	// (endNotice). The fields below are owned by its holder.
	turn    sync.Mutex
	looping bool // the loop's goroutine runs the loop: an end notice may take the turn

	head, tail *childRec
	byID       map[string]*childRec
	count      int
	restarts   []time.Time
	nextInc    uint64
	nextAuto   uint64
	selfq      []func()
	exiting    bool
	stopping   bool
}

type childRec struct {
	spec       Spec
	prev, next *childRec
	deps       []*childRec
	alone      [1]*childRec // itself: the restart set of a child without dependents (dependents), read only
	state      State
	cur        *incarnation
	incs       int // incarnations started
	quick      int // consecutive quick restarts
	replaced   int // restarts after an ExitReplaced exit
	lastErr    error
	token      uint64 // invalidates stale retry and backoff messages
	timer      Timer
	removed    bool
}

type incarnation struct {
	rec     *childRec
	id      string
	n       uint64
	child   Child
	readyAt time.Time
	ended   atomic.Bool
	gone    chan struct{} // closed when the supervisor abandons the child (see abandon)
}

type parentKey struct{}

// New validates a configuration and the static children, declared in start
// order, and returns a supervisor that is not yet running. Errors are
// *SpecError values.
func New(cfg Config, children ...Spec) (*Supervisor, error) {
	lim, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	seen := make(map[string]RestartType, len(children))
	for i := range children {
		sp := &children[i]
		if sp.ID == "" && cfg.Strategy == Dynamic {
			return nil, &SpecError{Field: "ID", Reason: "static children of a Dynamic supervisor need an ID"}
		}
		if err := validateSpec(sp, &cfg, func(id string) (bool, bool) {
			r, ok := seen[id]
			return ok, r == Temporary
		}); err != nil {
			return nil, err
		}
		if _, dup := seen[sp.ID]; dup {
			return nil, &SpecError{ID: sp.ID, Field: "ID", Reason: "duplicate", Err: ErrDuplicateID}
		}
		seen[sp.ID] = sp.Restart
	}
	s := &Supervisor{
		cfg:      cfg,
		lim:      lim,
		name:     cfg.Name,
		clock:    cfg.Clock,
		static:   append([]Spec(nil), children...),
		stopReq:  make(chan struct{}),
		mbox:     make(chan func()),
		wake:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
		byID:     make(map[string]*childRec, len(children)),
	}
	for i := range s.static {
		s.static[i].DependsOn = append([]string(nil), s.static[i].DependsOn...)
	}
	return s, nil
}

// Subtree returns the spec of a nested supervisor: each incarnation is a
// fresh supervisor built from cfg and children, started under the parent.
// Its Type is TypeSupervisor and its Shutdown Infinity unless set on the
// returned Spec. Unset Clock and EventHook are inherited from the parent,
// and the name defaults to "<parent>/<id>".
func Subtree(id string, cfg Config, children ...Spec) Spec {
	return Spec{
		ID:   id,
		Type: TypeSupervisor,
		Start: func(ctx context.Context) (Child, error) {
			c := cfg
			if c.Name == "" {
				if p, ok := ctx.Value(parentKey{}).(*Supervisor); ok {
					c.Name = p.name + "/" + id
				} else {
					c.Name = id
				}
			}
			s, err := New(c, children...)
			if err != nil {
				return nil, err
			}
			if err := s.Start(ctx); err != nil {
				return nil, err
			}
			return subtree{s}, nil
		},
	}
}

// subtree is a nested supervisor seen as a Child.
type subtree struct{ *Supervisor }

func (t subtree) Stop() { t.RequestStop() }

// Start starts the supervisor's loop and its static children, one after the
// other in declaration order, each only after the previous one is ready. It
// returns when all are running, or with a *StartError after stopping the
// ones already started in reverse order. Cancelling ctx aborts the start;
// it does not stop the supervisor afterwards (use Stop or Serve).
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.stopReqd {
		s.mu.Unlock()
		return fmt.Errorf("supervisor %q: %w", s.name, ErrStopped)
	}
	if s.started {
		s.mu.Unlock()
		select {
		case <-s.loopDone:
			return fmt.Errorf("supervisor %q: %w", s.name, ErrStopped)
		default:
			return fmt.Errorf("supervisor %q: start: %w", s.name, ErrRunning)
		}
	}
	s.started = true
	parent, _ := ctx.Value(parentKey{}).(*Supervisor)
	if s.clock == nil {
		s.clock = realClock{}
		if parent != nil {
			s.clock = parent.clock
		}
	}
	if s.cfg.EventHook != nil {
		s.events, s.ownEvents = newDispatcher(s.cfg.EventHook, s.cfg.EventFilter, s.cfg.EventBuffer), true
	} else if parent != nil {
		s.events = parent.events
	}
	s.base, s.cancelBase = context.WithCancelCause(context.WithValue(context.WithoutCancel(ctx), parentKey{}, s))
	s.mu.Unlock()

	initCtx, cancelInit := context.WithCancelCause(s.base)
	stopAF := context.AfterFunc(ctx, func() { cancelInit(context.Cause(ctx)) })
	result := make(chan error, 1)
	go s.run(initCtx, result)
	err := <-result
	stopAF()
	cancelInit(nil)
	return err
}

// Stop stops the supervisor: its children are stopped in reverse start
// order (concurrently under Dynamic), each within its Shutdown timeout, then
// the loop exits and pending events are delivered. Stop may be called any
// number of times, from any goroutine, before, during or after Start. It
// returns nil once stopped, or ctx's error if ctx ends first (the stop goes
// on). The supervisor's own exit reason is Err.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.requestStop()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervisor %q: stop: %w", s.name, context.Cause(ctx))
	}
}

// RequestStop asks the supervisor to stop, as Stop does, and returns at
// once: Done is closed when the stop is over, and Err then reports the exit
// reason. It is idempotent, may be called from any goroutine (a child's
// Start, an event hook, a signal handler) and concurrently with Stop, Kill
// and itself, before, during or after Start; a Kill after it makes the
// stops of the children not yet stopped brutal. A method called after it
// returns fails with ErrStopped without running; one the loop had already
// taken runs to its end and returns its result.
func (s *Supervisor) RequestStop() { s.requestStop() }

func (s *Supervisor) requestStop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReqd {
		return
	}
	s.stopReqd = true
	close(s.stopReq)
	if s.cancelBase != nil {
		s.cancelBase(ErrShutdown)
	}
	if !s.started {
		s.exitErr = ErrShutdown
		close(s.loopDone)
		close(s.done)
	}
}

// Serve runs the supervisor until ctx is cancelled or it exits by itself,
// in the style of oklog/run. It returns nil after a requested stop, the
// *StartError if it could not start, and the exit reason (for example an
// *IntensityError) if it gave up.
func (s *Supervisor) Serve(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		s.requestStop()
		<-s.done
	case <-s.done:
	}
	if err := s.Err(); Classify(err) == ExitAbnormal {
		return err
	}
	return nil
}

// Done is closed when the supervisor has stopped, all its children have
// ended and its events have been delivered.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Err is the supervisor's exit reason once Done is closed: ErrShutdown
// after Stop, ErrKilled after Kill, an *IntensityError when it gave up, a
// Shutdown{...} after an automatic shutdown, or the *StartError of a failed
// Start. It is nil while running.
func (s *Supervisor) Err() error {
	select {
	case <-s.done:
		return s.exitErr
	default:
		return nil
	}
}

// Kill stops the supervisor like Stop but kills its children at once
// (brutal kill all the way down). It does not wait.
func (s *Supervisor) Kill() {
	s.killReq.Store(true)
	s.requestStop()
}

// DroppedEvents returns how many events were dropped because the event
// queue was full or the hook panicked.
func (s *Supervisor) DroppedEvents() uint64 {
	s.mu.Lock()
	d := s.events
	s.mu.Unlock()
	if d == nil {
		return 0
	}
	return d.dropped.Load()
}

// StartChild adds a child and starts it; it goes last in start order (and
// is stopped first). ctx also bounds the child's Start. It returns a handle
// to the new incarnation, a zero Handle if Start returned ErrIgnore, or an
// error: a *SpecError, ErrAlreadyPresent, ErrMaxChildren, a *StartError
// (the spec is then not kept), or ErrStopped.
//
// Like every method that talks to the loop, it never reports a failure for
// an operation that ran: ErrStopped or ctx's error means nothing was done.
// Once the loop has taken the request, StartChild waits for its outcome
// even if ctx ends meanwhile; ctx's end then reaches the child's Start,
// which either fails (a *StartError wrapping the cause, no child kept) or
// succeeds anyway (a handle to the running child).
func (s *Supervisor) StartChild(ctx context.Context, spec Spec) (Handle, error) {
	var h Handle
	var err error
	if cerr := s.call(ctx, func() { h, err = s.doStartChild(ctx, spec) }); cerr != nil {
		return Handle{}, cerr
	}
	return h, err
}

// TerminateChild stops a child, and first its running dependents in reverse
// order. The spec is kept (Stopped), except a Temporary child's and any
// child of a Dynamic supervisor, which are removed. A pending restart or
// backoff of the child is cancelled. It never triggers an automatic
// shutdown. ErrStopped or ctx's error means nothing was stopped: ctx only
// bounds the wait for the loop to take the request; once taken, the stop
// runs to its end (within the children's Shutdown timeouts) and its result
// is returned.
func (s *Supervisor) TerminateChild(ctx context.Context, id string) error {
	var err error
	if cerr := s.call(ctx, func() { err = s.doTerminate(id, nil) }); cerr != nil {
		return cerr
	}
	return err
}

// RestartChild starts a Stopped child again; its dependencies must be
// running. It returns ErrRunning or ErrRestarting if the child is not
// stopped, ErrDependency, or a *StartError (the child stays Stopped).
// ErrStopped or ctx's error means nothing was done; once the request is
// taken, ctx bounds the child's Start as in StartChild and the outcome is
// returned.
func (s *Supervisor) RestartChild(ctx context.Context, id string) (Handle, error) {
	var h Handle
	var err error
	if cerr := s.call(ctx, func() { h, err = s.doRestartChild(ctx, id) }); cerr != nil {
		return Handle{}, cerr
	}
	return h, err
}

// DeleteChild removes the spec of a Stopped child. It returns ErrRunning,
// ErrRestarting, or ErrDependency if another child depends on it.
// ErrStopped or ctx's error means nothing was removed.
func (s *Supervisor) DeleteChild(ctx context.Context, id string) error {
	var err error
	if cerr := s.call(ctx, func() { err = s.doDeleteChild(id) }); cerr != nil {
		return cerr
	}
	return err
}

// Lookup returns a handle to the current incarnation of a running child.
func (s *Supervisor) Lookup(ctx context.Context, id string) (Handle, error) {
	var h Handle
	var err error
	cerr := s.call(ctx, func() {
		r := s.byID[id]
		switch {
		case r == nil:
			err = fmt.Errorf("supervisor %q: child %q: %w", s.name, id, ErrNotFound)
		case r.cur == nil:
			err = fmt.Errorf("supervisor %q: child %q is %v: %w", s.name, id, r.state, ErrStaleHandle)
		default:
			h = Handle{s: s, inc: r.cur}
		}
	})
	if cerr != nil {
		return Handle{}, cerr
	}
	return h, err
}

// Children returns a snapshot of the children in start order (OTP
// which_children).
func (s *Supervisor) Children(ctx context.Context) ([]ChildInfo, error) {
	var out []ChildInfo
	if err := s.call(ctx, func() {
		out = make([]ChildInfo, 0, s.count)
		for r := s.head; r != nil; r = r.next {
			ci := ChildInfo{ID: r.spec.ID, Type: r.spec.Type, Restart: r.spec.Restart, State: r.state, LastErr: r.lastErr, Replaced: r.replaced}
			if r.cur != nil {
				ci.Incarnation = r.cur.n
			}
			if r.incs > 1 {
				ci.Restarts = r.incs - 1
			}
			out = append(out, ci)
		}
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// call runs f on the loop goroutine and waits for it. An error means f did
// not run and never will: the supervisor was stopped, or ctx ended, before
// the loop took f. Once the loop has taken f (mbox is unbuffered, so the
// send succeeds exactly when it does), call waits for f to finish whatever
// happens to ctx or the supervisor, and returns nil: the loop always runs a
// function it took to the end, and the caller's result is f's. What bounds
// that wait is the operation itself: a child Start sees ctx (and the
// supervisor's stop) through its own context, a stop its Shutdown timeout.
func (s *Supervisor) call(ctx context.Context, f func()) error {
	s.mu.Lock()
	ok := s.started && !s.stopReqd
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("supervisor %q: %w", s.name, ErrStopped)
	}
	done := make(chan struct{})
	select {
	case s.mbox <- func() { defer close(done); f() }:
	case <-s.stopReq:
		return fmt.Errorf("supervisor %q: %w", s.name, ErrStopped)
	case <-s.loopDone:
		return fmt.Errorf("supervisor %q: %w", s.name, ErrStopped)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	<-done
	return nil
}

// note queues f for the loop without ever blocking (child exits, timers).
func (s *Supervisor) note(f func()) {
	s.notesMu.Lock()
	if s.notesClosed {
		s.notesMu.Unlock()
		return // the loop has ended: nothing will run f
	}
	s.notes = append(s.notes, f)
	s.notesMu.Unlock()
	s.wakeLoop()
}

func (s *Supervisor) run(initCtx context.Context, result chan<- error) {
	if err := s.startStatic(initCtx); err != nil {
		s.terminateAll(err)
		s.exitErr = err
		result <- err
		s.finish()
		return
	}
	result <- nil
	s.loop()
	s.finish()
}

func (s *Supervisor) finish() {
	// A stopped supervisor never starts a child again: drop every spec and record, so that
	// whatever the children's Start functions hold (a plugin's compiled code, its memories)
	// can be freed while the Supervisor itself stays reachable (a closed host, a test's
	// cleanup).
	s.turn.Lock() // an end notice may hold it, finding the loop gone (restartsAlone)
	s.head, s.tail, s.byID, s.static, s.selfq = nil, nil, nil, nil, nil
	s.turn.Unlock()
	close(s.loopDone)
	s.watchers.Wait()
	s.notesMu.Lock()
	s.notes, s.notesClosed = nil, true
	s.notesMu.Unlock()
	if s.ownEvents {
		s.events.close()
	}
	close(s.done)
}

func (s *Supervisor) startStatic(ctx context.Context) error {
	for i := range s.static {
		r := s.addRec(s.static[i])
		if err := s.startRec(ctx, r); err != nil {
			if errors.Is(err, ErrIgnore) {
				s.ignored(r)
				continue
			}
			s.remove(r)
			select {
			case <-s.stopReq:
				return fmt.Errorf("supervisor %q: stopped during start: %w", s.name, ErrStopped)
			default:
			}
			return &StartError{Supervisor: s.name, ID: r.spec.ID, Err: err}
		}
		select {
		case <-s.stopReq:
			return fmt.Errorf("supervisor %q: stopped during start: %w", s.name, ErrStopped)
		default:
		}
	}
	return nil
}

func (s *Supervisor) loop() {
	s.turn.Lock()
	s.looping = true
	defer func() {
		s.looping = false
		s.turn.Unlock()
	}()
	for !s.exiting {
		if len(s.selfq) > 0 {
			select {
			case <-s.stopReq:
				s.shutdown()
				return
			case f := <-s.mbox:
				f()
				continue
			case <-s.wake:
				s.runNotes()
				continue
			default:
			}
			f := s.selfq[0]
			s.selfq[0] = nil
			s.selfq = s.selfq[1:]
			f()
			continue
		}
		// Waiting, the loop gives up its turn: an end notice may take it meanwhile
		// (endNotice), and never leaves the loop exiting.
		s.turn.Unlock()
		select {
		case <-s.stopReq:
			s.turn.Lock()
			s.shutdown()
			return
		case f := <-s.mbox:
			s.turn.Lock()
			f()
		case <-s.wake:
			s.turn.Lock()
			s.runNotes()
		}
	}
}

func (s *Supervisor) runNotes() {
	s.notesMu.Lock()
	notes := s.notes
	s.notes = nil
	s.notesMu.Unlock()
	for _, f := range notes {
		if s.exiting {
			return
		}
		f()
	}
}

func (s *Supervisor) shutdown() {
	s.stopping = true
	reason := ErrShutdown
	if s.killReq.Load() {
		reason = ErrKilled
	}
	s.terminateAll(reason)
	s.exitErr = reason
}

// exit ends the supervisor from inside the loop.
func (s *Supervisor) exit(reason error) {
	s.terminateAll(reason)
	s.exitErr = reason
	s.exiting = true
}

func (s *Supervisor) emit(e Event) {
	e.Supervisor = s.name
	if !s.events.wants(e) {
		return
	}
	e.Time = s.clock.Now()
	s.events.emit(e)
}

// ---- child records ----

func (s *Supervisor) addRec(sp Spec) *childRec {
	r := &childRec{spec: sp}
	for _, d := range sp.DependsOn {
		r.deps = append(r.deps, s.byID[d])
	}
	if s.tail == nil {
		s.head, s.tail = r, r
	} else {
		r.prev, s.tail.next, s.tail = s.tail, r, r
	}
	s.byID[sp.ID] = r
	s.count++
	return r
}

func (s *Supervisor) remove(r *childRec) {
	if r.removed {
		return
	}
	r.removed = true
	r.token++
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		s.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		s.tail = r.prev
	}
	r.prev, r.next = nil, nil
	delete(s.byID, r.spec.ID)
	s.count--
}

// retire ends a child for good after it exited or was stopped: Temporary
// children and children of a Dynamic supervisor are removed, others kept
// as Stopped. A task's completion is signalled.
func (s *Supervisor) retire(r *childRec, reason error) {
	r.state = StateStopped
	r.token++
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.spec.Restart == Temporary || s.cfg.Strategy == Dynamic {
		s.remove(r)
	}
	if r.spec.final != nil {
		r.spec.final(reason)
	}
}

func (s *Supervisor) ignored(r *childRec) {
	if r.spec.Restart == Temporary {
		s.remove(r)
		return
	}
	r.state = StateStopped
}

// startRec starts one incarnation of r with ctx bounding the start.
func (s *Supervisor) startRec(ctx context.Context, r *childRec) (err error) {
	if d := r.spec.StartTimeout; d > 0 {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		t := s.clock.AfterFunc(d, func() {
			cancel(fmt.Errorf("supervisor: child %q: start timeout %v: %w", r.spec.ID, d, context.DeadlineExceeded))
		})
		defer func() { t.Stop(); cancel(nil) }()
	}
	c, err := s.callStart(ctx, r)
	if err == nil && c == nil {
		err = fmt.Errorf("supervisor: child %q: Start returned a nil Child", r.spec.ID)
	}
	if err != nil {
		r.lastErr = err
		if !errors.Is(err, ErrIgnore) {
			s.emit(Event{Kind: EventStartFailed, Child: r.spec.ID, Err: err, Restarts: max(r.incs-1, 0)})
		}
		return err
	}
	s.nextInc++
	inc := &incarnation{rec: r, id: r.spec.ID, n: s.nextInc, child: c, readyAt: s.clock.Now(), gone: make(chan struct{})}
	r.cur = inc
	r.state = StateRunning
	r.incs++
	if n, ok := c.(Notifier); ok {
		// The child tells the loop itself: no watcher goroutine, and one hand-off less
		// between the end and the restart. An abandoned incarnation's note finds it handled.
		n.OnDone(func() { s.endNotice(inc) })
	} else {
		s.watchers.Add(1)
		go func() {
			defer s.watchers.Done()
			select {
			case <-c.Done():
				s.note(func() { s.onExit(inc) })
			case <-inc.gone: // abandoned: the supervisor no longer waits for it
			}
		}()
	}
	s.emit(Event{Kind: EventStarted, Child: r.spec.ID, Incarnation: inc.n, Restarts: r.incs - 1})
	return nil
}

func (s *Supervisor) callStart(ctx context.Context, r *childRec) (c Child, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("supervisor: child %q: Start panicked: %v", r.spec.ID, p)
		}
	}()
	return r.spec.Start(ctx)
}

// ---- exits and restarts ----

// endNotice is a Notifier child's report of inc's end. When the loop is idle (its turn is
// free), nothing is queued before this notice, and handling it is only restarting inc's
// child within the intensity (restartsAlone), it is handled here, in the reporting
// goroutine, as the loop would: the restart costs no hand-off to the loop's goroutine and
// back, which on an idle machine is a thread wake-up each way, more than a snapshot-restored
// instance costs to start (RATIONALE.md, "Restarts without hand-offs"). Anything else is
// queued for the loop (note): the order of events, the strategies that stop other
// children, giving up at the intensity and shutting down stay the loop's own.
func (s *Supervisor) endNotice(inc *incarnation) {
	if s.turn.TryLock() {
		if now, ok := s.restartsAlone(inc); ok {
			s.onExitAt(inc, now)
			queued := len(s.selfq) > 0 // a failed start's retry: the loop must come round for it
			s.turn.Unlock()
			if queued {
				s.wakeLoop()
			}
			return
		}
		s.turn.Unlock()
	}
	s.note(func() { s.onExit(inc) })
}

// restartsAlone reports whether handling inc's end now, outside the loop's goroutine, is
// only its child's restart (or the start of its backoff): the loop runs and is not
// stopping, no exit or timer is queued before this one, inc is its child's current
// incarnation, the child is restarted for this end, without stopping any other child (one
// for one, or dynamic, and no dependents), and the restart stays within the intensity.
// Called with the turn held. now is the clock's reading the intensity was checked at, for
// onExitAt: one reading serves both (a restart read the clock five times).
func (s *Supervisor) restartsAlone(inc *incarnation) (now time.Time, ok bool) {
	if !s.looping || s.exiting || s.stopping || len(s.selfq) > 0 {
		return now, false
	}
	select {
	case <-s.stopReq:
		return now, false
	default:
	}
	s.notesMu.Lock()
	queued := len(s.notes) > 0
	s.notesMu.Unlock()
	r := inc.rec
	if queued || r.cur != inc || r.removed {
		return now, false
	}
	switch s.cfg.Strategy {
	case OneForOne:
		for m := r.next; m != nil; m = m.next {
			if slices.Contains(m.deps, r) {
				return now, false
			}
		}
	case Dynamic:
	default:
		return now, false
	}
	class := Classify(inc.child.Err())
	switch {
	case class == ExitReplaced:
		return s.clock.Now(), r.spec.Restart != Temporary
	case r.spec.Restart == Permanent, r.spec.Restart == Transient && class == ExitAbnormal:
		now = s.clock.Now()
		return now, s.restartFits(r, now, now.Sub(inc.readyAt))
	}
	return now, false
}

// restartFits reports whether one more restart of r at now, after an incarnation that was up
// for uptime, stays within the intensity: whether addRestart, called at now or later (a later
// now drops restarts from the window and lengthens the uptime), will not give up.
func (s *Supervisor) restartFits(r *childRec, now time.Time, uptime time.Duration) bool {
	cut := now.Add(-s.lim.period)
	old, _ := slices.BinarySearchFunc(s.restarts, cut, func(t, cut time.Time) int { // s.restarts is in time order
		if t.Before(cut) {
			return -1
		}
		return 1
	})
	if len(s.restarts)-old+1 > s.lim.intensity {
		return false
	}
	// The slow-cycle rule (addRestart) applies only with a minimum uptime, which is then the
	// threshold of a quick restart.
	return s.lim.minUptime <= 0 || uptime >= s.lim.minUptime || r.quick+1 <= s.lim.intensity
}

// wakeLoop makes the loop's goroutine come round, without blocking.
func (s *Supervisor) wakeLoop() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Supervisor) onExit(inc *incarnation) { s.onExitAt(inc, s.clock.Now()) }

// onExitAt handles inc's end, now being the clock's reading for it.
func (s *Supervisor) onExitAt(inc *incarnation, now time.Time) {
	r := inc.rec
	if r.cur != inc {
		return // an ended incarnation: already handled
	}
	r.cur = nil
	inc.ended.Store(true)
	reason := inc.child.Err()
	class := Classify(reason)
	r.lastErr = reason
	uptime := now.Sub(inc.readyAt)
	s.emit(Event{Kind: EventExited, Child: r.spec.ID, Incarnation: inc.n, Err: reason, Class: class, Restarts: r.incs - 1})

	restart := r.spec.Restart == Permanent || (r.spec.Restart == Transient && (class == ExitAbnormal || class == ExitReplaced))
	if !restart {
		s.stopDependents(r)
		s.retire(r, reason)
		s.autoShutdown(r)
		return
	}
	if class == ExitReplaced {
		// Not a failure: neither the intensity, nor the quick-restart count, nor the
		// backoff sees it.
		r.replaced++
		s.restart(r, false)
		return
	}
	if !s.addRestart(r, now, uptime, reason) {
		return
	}
	s.restart(r, true)
}

// addRestart records a restart decided for r at now and checks the intensity
// before it happens; when exceeded, the supervisor exits and it reports
// false.
func (s *Supervisor) addRestart(r *childRec, now time.Time, uptime time.Duration, reason error) bool {
	cut := now.Add(-s.lim.period)
	i := 0
	for i < len(s.restarts) && s.restarts[i].Before(cut) {
		i++
	}
	s.restarts = append(s.restarts[i:], now)
	// quick counts consecutive short-lived incarnations; it drives both the
	// backoff exponent and, unless disabled, the slow-cycle rule.
	threshold := s.lim.minUptime
	if threshold <= 0 {
		threshold = s.lim.period
	}
	if uptime < threshold {
		r.quick++
	} else {
		r.quick = 0
	}
	var ie *IntensityError
	switch {
	case len(s.restarts) > s.lim.intensity:
		ie = &IntensityError{Restarts: len(s.restarts), Period: s.lim.period}
	case s.lim.minUptime > 0 && r.quick > s.lim.intensity:
		ie = &IntensityError{Restarts: r.quick, Period: s.lim.period, SlowCycle: true}
	default:
		return true
	}
	ie.Supervisor, ie.Child, ie.Err = s.name, r.spec.ID, reason
	s.emit(Event{Kind: EventMaxIntensity, Child: r.spec.ID, Err: ie, Restarts: max(r.incs-1, 0)})
	r.state = StateStopped
	s.exit(ie)
	return false
}

// restartSet returns the children restarted with r, in start order. The caller only reads it.
func (s *Supervisor) restartSet(r *childRec) []*childRec {
	switch s.cfg.Strategy {
	case OneForAll:
		var out []*childRec
		for m := s.head; m != nil; m = m.next {
			out = append(out, m)
		}
		return out
	case RestForOne:
		var out []*childRec
		for m := r; m != nil; m = m.next {
			out = append(out, m)
		}
		return out
	default:
		return s.dependents(r, true)
	}
}

// dependents returns r's transitive dependents in start order, with r
// first when self is set. Dependencies always precede their dependents.
func (s *Supervisor) dependents(r *childRec, self bool) []*childRec {
	if s.cfg.Strategy == Dynamic || !s.anyDeps(r) {
		if !self {
			return nil
		}
		r.alone[0] = r
		return r.alone[:]
	}
	out := []*childRec{r}
	set := map[*childRec]bool{r: true}
	for m := r.next; m != nil; m = m.next {
		for _, d := range m.deps {
			if set[d] {
				set[m] = true
				out = append(out, m)
				break
			}
		}
	}
	if !self {
		out = out[1:]
	}
	return out
}

// anyDeps reports whether a child after r declares dependencies: when none does, r has no
// dependents, and dependents makes no set to find them.
func (s *Supervisor) anyDeps(r *childRec) bool {
	for m := r.next; m != nil; m = m.next {
		if len(m.deps) > 0 {
			return true
		}
	}
	return false
}

// restart runs the restart of r (which is not running) for the strategy:
// the others in the set are stopped in reverse start order (Temporary ones
// removed), then, after r's backoff if any (and if wait), started in start
// order.
func (s *Supervisor) restart(r *childRec, wait bool) {
	set := s.restartSet(r)
	s.emit(Event{Kind: EventRestarting, Child: r.spec.ID, Restarts: max(r.incs-1, 0)})
	for i := len(set) - 1; i >= 0; i-- {
		m := set[i]
		if m == r {
			continue
		}
		s.cancelPending(m)
		s.stopChild(m)
		if m.spec.Restart == Temporary {
			s.retire(m, m.lastErr)
			continue
		}
		m.state = StateRestarting
	}
	r.token++
	r.state = StateRestarting
	if d := r.spec.Backoff.delay(max(r.quick, 1), rand.Float64); wait && d > 0 {
		r.state = StateBackoff
		tok := r.token
		r.timer = s.clock.AfterFunc(d, func() { s.note(func() { s.backoffDone(r, tok) }) })
		s.emit(Event{Kind: EventBackoff, Child: r.spec.ID, Delay: d, Restarts: max(r.incs-1, 0)})
		return
	}
	s.startPending(r)
}

func (s *Supervisor) cancelPending(m *childRec) {
	m.token++
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}

func (s *Supervisor) backoffDone(r *childRec, tok uint64) {
	if r.removed || r.token != tok || r.state != StateBackoff {
		return
	}
	r.timer = nil
	r.state = StateRestarting
	s.startPending(r)
}

// startPending starts, in start order, r and the members of its restart
// set that wait in StateRestarting. On a failure the failed child is
// retried as a message, so the supervisor stays responsive; under
// OneForAll and RestForOne the rest wait for that retry, under OneForOne
// only the failed child's dependents do.
func (s *Supervisor) startPending(r *childRec) {
	failed := false
	for _, m := range s.restartSet(r) {
		if m != r && m.state != StateRestarting {
			continue
		}
		if failed && s.cfg.Strategy != OneForOne && s.cfg.Strategy != Dynamic {
			break
		}
		if !depsRunning(m) {
			continue // its failed dependency's retry will start it
		}
		err := s.startRec(s.base, m)
		if err == nil {
			continue
		}
		if s.stopping {
			return
		}
		if errors.Is(err, ErrIgnore) {
			s.stopDependents(m)
			s.retire(m, nil)
			continue
		}
		failed = true
		m.state = StateRestarting
		m.token++
		tok := m.token
		s.selfq = append(s.selfq, func() { s.retry(m, tok) })
	}
}

func depsRunning(m *childRec) bool {
	for _, d := range m.deps {
		if d.cur == nil {
			return false
		}
	}
	return true
}

// retry re-runs the restart of a child whose restart failed. Each retry
// counts towards the intensity, as in OTP.
func (s *Supervisor) retry(m *childRec, tok uint64) {
	if m.removed || m.token != tok || m.state != StateRestarting {
		return
	}
	if !s.addRestart(m, s.clock.Now(), 0, m.lastErr) {
		return
	}
	s.restart(m, true)
}

// stopDependents stops r's running dependents in reverse start order and
// leaves them Stopped (Temporary ones removed).
func (s *Supervisor) stopDependents(r *childRec) {
	deps := s.dependents(r, false)
	for i := len(deps) - 1; i >= 0; i-- {
		m := deps[i]
		s.cancelPending(m)
		s.stopChild(m)
		s.retire(m, m.lastErr)
	}
}

// stopChild stops r's incarnation, if any, and waits for it: Stop, then
// Kill after the Shutdown timeout (Kill at once for BrutalKill or when the
// supervisor was killed). The outcome is an EventStopped or, if the child
// did not end as expected, an EventShutdownError; either way it is not
// restarted.
func (s *Supervisor) stopChild(r *childRec) {
	inc := r.cur
	if inc == nil {
		return
	}
	r.cur = nil
	inc.ended.Store(true)
	c := inc.child
	d := r.spec.shutdownTimeout()
	brutal := d == BrutalKill || s.killReq.Load()
	timedOut := false
	switch {
	case brutal:
		c.Kill()
		if !s.waitKilled(c) {
			s.abandon(r, inc)
			return
		}
	case d == Infinity:
		c.Stop()
		<-c.Done()
	default:
		c.Stop()
		if !s.waitTimeout(c.Done(), d) {
			timedOut = true
			c.Kill()
			if !s.waitKilled(c) {
				s.abandon(r, inc)
				return
			}
		}
	}
	s.stopped(r, inc, brutal, timedOut)
}

// waitKilled waits for a killed child to end, at most Config.KillTimeout.
func (s *Supervisor) waitKilled(c Child) bool {
	if s.lim.killTimeout == Infinity {
		<-c.Done()
		return true
	}
	return s.waitTimeout(c.Done(), s.lim.killTimeout)
}

// abandon reports a child that ignored Kill: the stop goes on without it.
func (s *Supervisor) abandon(r *childRec, inc *incarnation) {
	s.unstopped.Add(1)
	close(inc.gone)
	err := fmt.Errorf("supervisor: child %q still running %v after Kill: %w", r.spec.ID, s.lim.killTimeout, ErrUnstopped)
	r.lastErr = err
	s.emit(Event{Kind: EventShutdownError, Child: r.spec.ID, Incarnation: inc.n, Err: err, Class: ExitAbnormal, Restarts: r.incs - 1})
}

// Unstopped counts the children this supervisor abandoned because they
// were still running Config.KillTimeout after Kill. Their goroutines may
// outlive the supervisor; every other goroutine ends before Done.
func (s *Supervisor) Unstopped() uint64 { return s.unstopped.Load() }

func (s *Supervisor) waitTimeout(done <-chan struct{}, d time.Duration) bool {
	select {
	case <-done:
		return true
	default:
	}
	fire := make(chan struct{})
	t := s.clock.AfterFunc(d, func() { close(fire) })
	select {
	case <-done:
		t.Stop()
		return true
	case <-fire:
		return false
	}
}

// stopped classifies the end of a supervisor-initiated stop (OTP
// shutdown/2): ErrShutdown is clean; a normal exit or Shutdown{...} is clean
// unless the child is Permanent; ErrKilled is clean after a brutal kill;
// anything else, including a kill after the timeout, is a shutdown error.
func (s *Supervisor) stopped(r *childRec, inc *incarnation, brutal, timedOut bool) {
	reason := inc.child.Err()
	r.lastErr = reason
	class := Classify(reason)
	var ok bool
	switch {
	case timedOut:
		ok = false
	case class == ExitShutdown && (reason == ErrShutdown || r.spec.Restart != Permanent): //nolint:errorlint // the bare sentinel, not a wrapped Shutdown{Reason}
		ok = true
	case class == ExitShutdown:
		var sh Shutdown
		ok = !errors.As(reason, &sh)
	case class == ExitNormal:
		ok = r.spec.Restart != Permanent
	case class == ExitReplaced:
		ok = true // it ended to be replaced, and is not: a clean end
	case brutal && errors.Is(reason, ErrKilled):
		ok = true
	}
	k := EventStopped
	if !ok {
		k = EventShutdownError
		if timedOut {
			reason = fmt.Errorf("supervisor: child %q: killed after shutdown timeout: %w", r.spec.ID, reason)
		}
	}
	s.emit(Event{Kind: k, Child: r.spec.ID, Incarnation: inc.n, Err: reason, Class: class, Restarts: r.incs - 1})
}

// terminateAll stops every child: in reverse start order, or concurrently
// under Dynamic. Children without an incarnation are retired with reason.
func (s *Supervisor) terminateAll(reason error) {
	s.selfq = nil
	for r := s.head; r != nil; r = r.next {
		s.cancelPending(r)
	}
	if s.cfg.Strategy == Dynamic {
		s.stopConcurrently()
	} else {
		for r := s.tail; r != nil; r = r.prev {
			s.stopChild(r)
		}
	}
	for r := s.head; r != nil; {
		next := r.next
		if r.spec.final != nil {
			fr := reason
			if r.lastErr != nil && r.state == StateRunning {
				fr = r.lastErr
			}
			r.spec.final(fr)
			r.spec.final = nil
		}
		r.state = StateStopped
		r = next
	}
}

// stopConcurrently stops all running children at once, with one timer per
// distinct shutdown timeout, as DynamicSupervisor does.
func (s *Supervisor) stopConcurrently() {
	type stopping struct {
		r      *childRec
		inc    *incarnation
		brutal bool
		fire   chan struct{}
	}
	var all []stopping
	timers := map[time.Duration]chan struct{}{}
	var stops []Timer
	for r := s.head; r != nil; r = r.next {
		inc := r.cur
		if inc == nil {
			continue
		}
		r.cur = nil
		inc.ended.Store(true)
		d := r.spec.shutdownTimeout()
		st := stopping{r: r, inc: inc, brutal: d == BrutalKill || s.killReq.Load()}
		if st.brutal {
			inc.child.Kill()
		} else {
			inc.child.Stop()
			if d != Infinity {
				ch, ok := timers[d]
				if !ok {
					ch = make(chan struct{})
					timers[d] = ch
					stops = append(stops, s.clock.AfterFunc(d, func() { close(ch) }))
				}
				st.fire = ch
			}
		}
		all = append(all, st)
	}
	for _, st := range all {
		c := st.inc.child
		timedOut := false
		if st.fire != nil {
			select {
			case <-c.Done():
			case <-st.fire:
				select {
				case <-c.Done():
				default:
					timedOut = true
					c.Kill()
				}
			}
		}
		if (st.brutal || timedOut) && !s.waitKilled(c) {
			s.abandon(st.r, st.inc)
			continue
		}
		<-c.Done()
		s.stopped(st.r, st.inc, st.brutal, timedOut)
	}
	for _, t := range stops {
		t.Stop()
	}
}

// autoShutdown applies Config.AutoShutdown after r, significant or not,
// exited by itself and was not restarted.
func (s *Supervisor) autoShutdown(r *childRec) {
	if !r.spec.Significant {
		return
	}
	switch s.cfg.AutoShutdown {
	case AnySignificant:
	case AllSignificant:
		for m := s.head; m != nil; m = m.next {
			if m.spec.Significant && m.state != StateStopped {
				return
			}
		}
	default:
		return
	}
	s.exit(Shutdown{Reason: fmt.Errorf("supervisor %q: auto shutdown after significant child %q exited", s.name, r.spec.ID)})
}

// ---- API implementations (loop goroutine) ----

func (s *Supervisor) errf(id, format string, err error) error {
	return fmt.Errorf("supervisor %q: child %q: "+format+": %w", s.name, id, err)
}

func (s *Supervisor) doStartChild(ctx context.Context, sp Spec) (Handle, error) {
	if s.cfg.Strategy == Dynamic && sp.ID == "" {
		for {
			s.nextAuto++
			sp.ID = "#" + strconv.FormatUint(s.nextAuto, 10)
			if s.byID[sp.ID] == nil {
				break
			}
		}
	}
	if err := validateSpec(&sp, &s.cfg, func(id string) (bool, bool) {
		r := s.byID[id]
		return r != nil, r != nil && r.spec.Restart == Temporary
	}); err != nil {
		return Handle{}, err
	}
	if s.byID[sp.ID] != nil {
		return Handle{}, s.errf(sp.ID, "start", ErrAlreadyPresent)
	}
	if s.cfg.MaxChildren > 0 && s.count >= s.cfg.MaxChildren {
		return Handle{}, fmt.Errorf("supervisor %q: %d children: %w", s.name, s.count, ErrMaxChildren)
	}
	sp.DependsOn = append([]string(nil), sp.DependsOn...)
	r := s.addRec(sp)
	if !depsRunning(r) {
		s.remove(r)
		return Handle{}, s.errf(sp.ID, "start: a dependency is not running", ErrDependency)
	}
	sctx, cancel := context.WithCancelCause(s.base)
	stopAF := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	err := s.startRec(sctx, r)
	stopAF()
	cancel(nil)
	if err != nil {
		if errors.Is(err, ErrIgnore) {
			if s.cfg.Strategy == Dynamic {
				s.remove(r)
			} else {
				s.ignored(r)
			}
			return Handle{}, nil
		}
		s.remove(r)
		return Handle{}, &StartError{Supervisor: s.name, ID: sp.ID, Err: err}
	}
	return Handle{s: s, inc: r.cur}, nil
}

func (s *Supervisor) doTerminate(id string, only *incarnation) error {
	r := s.byID[id]
	if r == nil {
		if only != nil {
			return s.errf(id, fmt.Sprintf("incarnation %d", only.n), ErrStaleHandle)
		}
		return s.errf(id, "terminate", ErrNotFound)
	}
	if only != nil && r.cur != only {
		return s.errf(id, fmt.Sprintf("incarnation %d", only.n), ErrStaleHandle)
	}
	s.stopDependents(r)
	s.cancelPending(r)
	s.stopChild(r)
	s.retire(r, r.lastErr)
	return nil
}

func (s *Supervisor) doRestartChild(ctx context.Context, id string) (Handle, error) {
	r := s.byID[id]
	switch {
	case r == nil:
		return Handle{}, s.errf(id, "restart", ErrNotFound)
	case r.state == StateRunning:
		return Handle{}, s.errf(id, "restart", ErrRunning)
	case r.state != StateStopped:
		return Handle{}, s.errf(id, "restart", ErrRestarting)
	case !depsRunning(r):
		return Handle{}, s.errf(id, "restart: a dependency is not running", ErrDependency)
	}
	sctx, cancel := context.WithCancelCause(s.base)
	stopAF := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	err := s.startRec(sctx, r)
	stopAF()
	cancel(nil)
	if err != nil {
		if errors.Is(err, ErrIgnore) {
			s.ignored(r)
			return Handle{}, nil
		}
		return Handle{}, &StartError{Supervisor: s.name, ID: id, Err: err}
	}
	return Handle{s: s, inc: r.cur}, nil
}

func (s *Supervisor) doDeleteChild(id string) error {
	r := s.byID[id]
	switch {
	case r == nil:
		return s.errf(id, "delete", ErrNotFound)
	case r.state == StateRunning:
		return s.errf(id, "delete", ErrRunning)
	case r.state != StateStopped:
		return s.errf(id, "delete", ErrRestarting)
	}
	for m := r.next; m != nil; m = m.next {
		for _, d := range m.deps {
			if d == r {
				return s.errf(id, fmt.Sprintf("delete: child %q depends on it", m.spec.ID), ErrDependency)
			}
		}
	}
	s.remove(r)
	return nil
}
