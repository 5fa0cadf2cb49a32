package host

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// instance is what a pool holds. *sandbox.Instance satisfies it; an Extism instance will too
// (see module.go).
type instance interface {
	CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error)
	Configure(ctx context.Context, config map[string]string) error
	Deliver(ctx context.Context, topic string, payload []byte) error
	Events(since uint64) (sandbox.EventLog, error)
	Telemetry() ([]sandbox.Metric, error)
	AppliedConfig() (map[string]string, error)
	MemoryPages() uint32
	Err() error
	Kill()
	Close(ctx context.Context) error
}

// Member states. A member is acquired by one CAS free→busy; the supervisor's Stop turns
// free into ended at once, or busy into stopReq so that the holder ends it on release.
const (
	stFree uint32 = iota
	stBusy
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
// Child. It ends when a call finds its instance dead (trap, deadline, memory, exit,
// violation), when it is killed, or when the supervisor stops it; in every case it releases
// its slot before Done is closed, so the successor's registration can never find the slot
// taken.
type member struct {
	p       *plugin
	idx     int
	inc     uint64
	inst    instance
	state   atomic.Uint32
	reason  atomic.Uint32
	applied atomic.Uint64 // the config version the instance holds
	calls   atomic.Uint64 // calls served; written only by the member's holder
	done    chan struct{}
	err     error
	once    sync.Once
}

// Done, Err, Stop and Kill make a member a supervisor.Child.
func (m *member) Done() <-chan struct{} { return m.done }

func (m *member) Err() error { return m.err }

func (m *member) Stop() { m.requestEnd(reasonShutdown) }

func (m *member) Kill() {
	m.reason.Store(reasonKilled) // before the kill, so that the interrupted holder reports it
	m.inst.Kill()
	m.requestEnd(reasonKilled)
}

// requestEnd ends a free member now, or marks a busy one so that its holder ends it.
func (m *member) requestEnd(reason uint32) {
	if m.reason.Load() != reasonKilled {
		m.reason.Store(reason)
	}
	for {
		switch s := m.state.Load(); s {
		case stFree:
			if m.state.CompareAndSwap(stFree, stEnded) {
				m.end(m.requested())
				return
			}
		case stBusy:
			if m.state.CompareAndSwap(stBusy, stStopReq) {
				return
			}
		default:
			return
		}
	}
}

func (m *member) requested() error {
	if m.reason.Load() == reasonKilled {
		return supervisor.ErrKilled
	}
	return supervisor.ErrShutdown
}

// tryAcquire takes the member if it is free.
func (m *member) tryAcquire() bool { return m.state.CompareAndSwap(stFree, stBusy) }

// end releases the slot, closes the instance and reports the end to the supervisor. It runs
// once, on the goroutine that moved the member to stEnded.
func (m *member) end(reason error) {
	m.once.Do(func() {
		p := m.p
		p.slots[m.idx].m.CompareAndSwap(m, nil) // the name is free before anyone learns of the end
		p.live.Add(-1)
		p.stats.calls.Add(m.calls.Load())
		_ = m.inst.Close(context.Background()) // not busy: the holder or the stopper owns it
		p.h.live.Add(-1)
		m.err = reason
		p.h.emit(Event{Kind: EventInstanceEnded, Plugin: p.name, Instance: m.idx, Incarnation: m.inc, Err: reason})
		p.notify()
		close(m.done)
	})
}

// slot is one pool position; m is its current member, nil while it is down.
type slot struct {
	m      atomic.Pointer[member]
	starts atomic.Uint64
	_      [48]byte // keep slots on their own cache lines
}

// tryAcquire takes a free member, without waiting.
func (p *plugin) tryAcquire() *member {
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil && m.tryAcquire() {
			return m
		}
	}
	return nil
}

// acquire takes a free member, waiting within ctx. Waiters sleep on wake (capacity 1): a
// releaser that sees waiters signals it, and a waiter that got a member passes the signal on
// while others wait, so no release is lost.
func (p *plugin) acquire(ctx context.Context) (*member, error) {
	if m := p.tryAcquire(); m != nil {
		return m, nil
	}
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	for {
		if m := p.tryAcquire(); m != nil {
			if p.waiters.Load() > 1 {
				p.signal()
			}
			return m, nil
		}
		select {
		case <-p.wake:
		case <-ctx.Done():
			return nil, pluginErr(p.name, "acquire", &waitError{cause: context.Cause(ctx)})
		case <-p.gone:
			return nil, pluginErr(p.name, "acquire", ErrNotFound)
		case <-p.h.root.Done():
			return nil, pluginErr(p.name, "acquire", ErrClosed)
		}
	}
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

// release hands a member back after an operation that returned err.
func (p *plugin) release(m *member, err error) {
	if err != nil {
		if ierr := m.inst.Err(); ierr != nil {
			if m.state.Swap(stEnded) == stStopReq || m.reason.Load() != reasonNone {
				ierr = m.requested()
			}
			m.end(ierr)
			return
		}
	}
	if !m.state.CompareAndSwap(stBusy, stFree) {
		m.state.Store(stEnded) // stStopReq: the supervisor asked while we held it
		m.end(m.requested())
		return
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

// startMember is the supervisor Start of pool slot i: a fresh instance with the desired
// config, registered in its slot.
func (p *plugin) startMember(i int) func(ctx context.Context) (supervisor.Child, error) {
	return func(ctx context.Context) (supervisor.Child, error) {
		h := p.h
		var inst instance
		var err error
		d := p.desired.Load()
		if pre := p.prepared[i].Swap(nil); pre != nil { // made by Replace, before the old one stopped
			inst, d = pre.inst, pre.d
		} else {
			mod := p.mod()
			inst, err = mod.instantiate(ctx, d.cfg)
			if err != nil && isRejected(err) {
				p.reject(d, err)
				d = p.desired.Load()
				inst, err = mod.instantiate(ctx, d.cfg)
			}
		}
		if err != nil {
			return nil, pluginErr(p.name, "start", err)
		}
		h.live.Add(1)
		m := &member{p: p, idx: i, inst: inst, inc: h.incarnation.Add(1), done: make(chan struct{})}
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
