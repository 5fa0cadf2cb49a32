package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// instance is what a pool holds: a sandbox.Runner of any format. It serves one operation at
// a time and answers sandbox.ErrBusy at once when entered while busy: that is the pool's only
// lock (see RATIONALE.md, "The pool").
type instance = sandbox.Runner

// Member states. Who holds the instance is the instance's own business; the member records
// only whether the supervisor asked it to end.
const (
	stLive uint32 = iota
	stStopReq
	stEnded
)

// Why the supervisor asked a member to end.
const (
	reasonNone uint32 = iota
	reasonShutdown
	reasonKilled
)

// member is one incarnation of one pool slot: a sandbox instance seen by the supervisor as a
// Child. It ends when an operation finds its instance dead (trap, deadline, memory, exit,
// violation), when it is killed, or when the supervisor stops it; in every case it releases
// its slot before Done is closed, so the successor's registration can never find the slot
// taken.
type member struct {
	p       *plugin
	idx     int
	inc     uint64
	cur     atomic.Pointer[instRef] // the instance; replaced by a reset (see percall.go)
	state   atomic.Uint32
	reason  atomic.Uint32
	applied atomic.Uint64 // the config version the instance holds
	badMem  atomic.Uint32 // the stores found malformed and reported: see readStore
	done    chan struct{}
	onDone  atomic.Pointer[func()] // the supervisor's notice of the end: see OnDone
	err     error
	once    sync.Once

	// Instance per call (see percall.go): the resets in flight.
	rmu     sync.Mutex
	ended   bool               // under rmu: no reset may start or install any more
	rctx    context.Context    // under rmu: the resets' context, made by the first one
	rcancel context.CancelFunc // under rmu: cancels it; called by the member's end
	resets  sync.WaitGroup     // the resets in flight; Add under rmu while not ended
}

// in is the member's current instance.
func (m *member) in() instance { return m.cur.Load().instance }

// Done, Err, Stop and Kill make a member a supervisor.Child.
func (m *member) Done() <-chan struct{} { return m.done }

// OnDone makes a member a supervisor.Notifier: end calls f after closing done, so the
// supervisor learns of the end from the goroutine that ended the member, with no watcher.
func (m *member) OnDone(f func()) {
	m.onDone.Store(&f)
	select {
	case <-m.done: // ended already: whichever of end and OnDone takes f calls it
		if m.onDone.CompareAndSwap(&f, nil) {
			f()
		}
	default:
	}
}

func (m *member) Err() error { return m.err }

func (m *member) Stop() { m.requestEnd(reasonShutdown) }

func (m *member) Kill() {
	m.reason.Store(reasonKilled) // before the kill, so that the interrupted caller reports it
	m.in().Kill()
	m.requestEnd(reasonKilled)
}

// requestEnd marks the member as asked to end, and drains it.
func (m *member) requestEnd(reason uint32) {
	if m.reason.Load() != reasonKilled {
		m.reason.Store(reason)
	}
	if !m.state.CompareAndSwap(stLive, stStopReq) && m.state.Load() == stEnded {
		return
	}
	m.drain()
	if f := m.p.h.opts.stopHook; f != nil {
		f(m.p.name, m.idx)
	}
}

// drain retires the instance and ends the member if that ended the instance: it was idle, or
// dead already. A busy instance serves its operation to the end, and its caller, which finds
// the member asked to end (see after), drains it again.
func (m *member) drain() bool {
	if !m.in().Retire() {
		return false
	}
	m.state.Store(stEnded)
	m.end(m.requested())
	return true
}

func (m *member) requested() error {
	if m.reason.Load() == reasonKilled {
		return supervisor.ErrKilled
	}
	return supervisor.ErrShutdown
}

// end releases the slot, closes the instance and reports the end to the supervisor. It runs
// once, whoever calls it first: the caller that found the instance dead, or the stopper.
func (m *member) end(reason error) {
	ended := false
	m.once.Do(func() {
		ended = true
		p := m.p
		m.stopReset()                           // before the instance is closed: a reset in flight neither installs nor leaks one
		p.slots[m.idx].m.CompareAndSwap(m, nil) // the name is free before anyone learns of the end
		p.live.Add(-1)
		p.stats.calls.Add(m.in().Calls())
		p.closeInstance(m, m.in())  // its last operation has returned
		p.drops.add(m.in().Stats()) // after Close, which reports what is left
		p.h.live.Add(-1)
		m.err = reason
		p.h.emit(Event{Kind: EventInstanceEnded, Plugin: p.name, Instance: m.idx, Incarnation: m.inc, Err: reason})
		p.notify()
		close(m.done)
	})
	// Outside the once, which would hold up a concurrent end: the supervisor may restart the
	// slot in f, on this goroutine (supervisor.Notifier).
	if !ended {
		return
	}
	if f := m.onDone.Swap(nil); f != nil {
		(*f)()
	}
}

// slot is one pool position; m is its current member, nil while it is down.
type slot struct {
	m      atomic.Pointer[member]
	starts atomic.Uint64
	_      [48]byte // keep slots on their own cache lines
}

// notEntered reports whether an operation on m returned err without running: the instance
// is busy (try another), or it has ended (then m is ended too, and the caller tries another).
func (p *plugin) notEntered(m *member, err error) bool {
	if errors.Is(err, sandbox.ErrBusy) || errors.Is(err, errBeforeEntry) {
		return true
	}
	var ue *sandbox.UnavailableError
	if errors.As(err, &ue) {
		p.after(m, err)
		return true
	}
	return false
}

// each runs op on the first live member that takes it, trying the slots in order from
// slot first, without waiting, and returns that member, or nil if every member was busy or
// down.
func (p *plugin) each(first int, op func(m *member) error) (*member, error) {
	for k := range p.slots {
		i := first + k
		if i >= len(p.slots) {
			i -= len(p.slots)
		}
		m := p.slots[i].m.Load()
		if m == nil || m.state.Load() != stLive {
			continue
		}
		if err := op(m); err == nil || !p.notEntered(m, err) {
			return m, err
		}
	}
	return nil, nil
}

// call is one call on a free member, tried from slot first (see Host.CallAppend), waiting
// within ctx for one; while the plugin is quarantined it fails at once with a *FailedError
// (returning no member). Waiters sleep on wake (capacity 1): a caller that sees waiters after
// its operation signals it (see after), and a waiter that got a member passes the signal on
// while others wait, so no wake-up is lost: a waiter counts itself before it tries the
// members, and a caller returns the instance to idle before it reads the count.
func (p *plugin) call(ctx context.Context, first int, handler string, input, dst []byte) (*member, []byte, error) {
	var out []byte
	op := func(m *member) (err error) {
		r := m.take()
		if r == nil {
			return sandbox.ErrBusy // served its call, resetting
		}
		out, err = r.CallAppend(ctx, handler, input, dst)
		if beforeEntry(err) {
			m.untake(r)
			return errBeforeEntry // the wait below reports it
		}
		if errors.Is(err, sandbox.ErrBusy) {
			m.untake(r)
		}
		return err
	}
	if m, err := p.each(first, op); m != nil {
		return m, out, err
	}
	if err := p.refused(); err != nil {
		return nil, dst, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, err)
	}
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	for {
		if m, err := p.each(first, op); m != nil {
			if p.waiters.Load() > 1 {
				p.signal()
			}
			return m, out, err
		}
		// A quarantine wakes one waiter (see quarantine), which wakes the next.
		if err := p.refused(); err != nil {
			if p.waiters.Load() > 1 {
				p.signal()
			}
			return nil, dst, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, err)
		}
		select {
		case <-p.wake:
		case <-ctx.Done():
			return nil, dst, pluginErr(p.name, "acquire", &waitError{cause: context.Cause(ctx)})
		case <-p.gone:
			return nil, dst, pluginErr(p.name, "acquire", ErrNotFound)
		case <-p.h.root.Done():
			return nil, dst, pluginErr(p.name, "acquire", ErrClosed)
		}
	}
}

// errBeforeEntry marks a call that did not run because its context had ended first.
var errBeforeEntry = errors.New("context ended before entry")

// beforeEntry reports whether err says the operation did not enter its instance because its
// context had ended first (a *sandbox.NotEnteredError, which package extism returns too). An
// operation the context ends inside returns another error instead: a *sandbox.DeadlineError,
// or sandbox.ErrCanceled wrapped, though both match the context's error with errors.Is. Such a
// call did not run: the pool reports it as a wait that ran out (ErrNoInstance with the cause).
func beforeEntry(err error) bool {
	var ne *sandbox.NotEnteredError
	return errors.As(err, &ne)
}

// waitError is ErrNoInstance with the context's cause.
type waitError struct{ cause error }

func (e *waitError) Error() string   { return ErrNoInstance.Error() + ": " + e.cause.Error() }
func (e *waitError) Unwrap() []error { return []error{ErrNoInstance, e.cause} }

func (p *plugin) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// budgetEnded reports whether an instance ended because its operation ran out of its own
// budget: past the plugin's call timeout, or at its memory limit.
func budgetEnded(err error) bool {
	return errors.Is(err, sandbox.ErrDeadline) || errors.Is(err, sandbox.ErrMemoryLimit)
}

// after is what follows any operation on m that ran (returned err): it ends the member if
// its instance has ended (a crash, a kill, or a drain the supervisor asked for), and hands on
// the work that waited for the instance to be free: a waiting caller, a config update, bus
// deliveries. An operation that succeeded may still find its instance ended: a Handle.Kill
// that landed after the guest had returned (or during a read, which runs no guest code)
// found the instance busy and left its end to the operation's end, as for one it interrupts.
func (p *plugin) after(m *member, err error) {
	if err != nil || m.state.Load() != stLive || m.in().Err() != nil {
		if ierr := m.in().Err(); ierr != nil {
			switch {
			case m.state.Swap(stEnded) == stStopReq || m.reason.Load() != reasonNone:
				ierr = m.requested()
			case sandbox.CallerEnded(ierr):
				// Its caller went away or ran out of time: the instance cannot be resumed, but it
				// did not fail. Replaced restarts it without counting towards the intensity.
				p.stats.callerEnded.Add(1)
				ierr = supervisor.Replaced{Reason: ierr}
			case budgetEnded(ierr):
				// The operation ran out of the plugin's own budget (its call timeout, its
				// memory limit): the input asked for more than the plugin may spend, which says
				// nothing about the plugin's health, and a client must not be able to
				// quarantine a plugin by sending expensive inputs. Replaced, uncounted; the
				// poison-input window still counts it against the input.
				p.stats.budgetEnded.Add(1)
				ierr = supervisor.Replaced{Reason: ierr}
			}
			m.end(ierr)
			return
		}
		if m.state.Load() == stStopReq && m.drain() {
			return
		}
	}
	if p.waiters.Load() > 0 {
		p.signal()
	}
	if m.applied.Load() != p.version.Load() {
		p.h.kick(p.h.cfgKick)
	}
	if p.pending.Load() > 0 {
		p.h.kick(p.h.bus.kick)
	}
}

// quiet reports whether no caller waits and no config update or delivery waits for m: then
// after has nothing to hand on.
func (p *plugin) quiet(m *member) bool {
	return p.isolation == SharedInstance && p.waiters.Load() == 0 && m.applied.Load() == p.version.Load() && p.pending.Load() == 0
}

// startMember is the supervisor Start of pool slot i: a fresh instance with the desired
// config, registered in its slot.
func (p *plugin) startMember(i int) func(ctx context.Context) (supervisor.Child, error) {
	return func(ctx context.Context) (supervisor.Child, error) {
		h := p.h
		var inst instance
		var d *desiredConfig
		var err error
		mod := p.mod()
		pre := p.prepared[i].Swap(nil) // made by Replace before the old one stopped, or a probe
		if pre != nil && pre.mod != mod {
			_ = pre.inst.Close(ctx) // a probe of a version Replace has superseded
			pre = nil
		}
		if pre != nil {
			inst, d = pre.inst, pre.d
		} else {
			inst, d, err = p.instantiate(ctx, mod)
		}
		if err != nil {
			return nil, pluginErr(p.name, "start", err)
		}
		h.live.Add(1)
		m := &member{p: p, idx: i, inc: h.incarnation.Add(1), done: make(chan struct{})}
		m.cur.Store(&instRef{instance: inst})
		m.applied.Store(d.version)
		if !p.slots[i].m.CompareAndSwap(nil, m) {
			_ = inst.Close(ctx)
			h.live.Add(-1)
			return nil, pluginErr(p.name, "start", errAlreadyRegistered)
		}
		if p.slots[i].starts.Add(1) > 1 {
			p.restarts.Add(1)
		}
		p.live.Add(1)
		h.emit(Event{Kind: EventInstanceStarted, Plugin: p.name, Instance: i, Incarnation: m.inc})
		p.notify()
		if p.waiters.Load() > 0 {
			p.signal()
		}
		if d.version != p.version.Load() {
			h.kick(h.cfgKick)
		}
		if p.pending.Load() > 0 {
			h.kick(h.bus.kick)
		}
		return m, nil
	}
}

// instantiate starts an instance of mod with the desired config; a config the guest rejects
// is reported and the last accepted one is tried instead.
func (p *plugin) instantiate(ctx context.Context, mod sandbox.Code) (instance, *desiredConfig, error) {
	d := p.desired.Load()
	inst, err := mod.Instantiate(ctx, d.cfg)
	if err != nil && isRejected(err) {
		p.reject(d, err)
		d = p.desired.Load()
		inst, err = mod.Instantiate(ctx, d.cfg)
	}
	if err == nil {
		p.checkpoint(inst)
	}
	return inst, d, err
}
