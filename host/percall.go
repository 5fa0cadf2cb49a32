package host

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Isolation says what a call shares with the calls before it (Plugin.Isolation).
type Isolation uint8

const (
	// SharedInstance, the default: an instance serves call after call until it fails, and
	// what one call leaves in its memory (globals, caches, stores) the next call on that
	// instance sees.
	SharedInstance Isolation = iota
	// InstancePerCall: every call, bus delivery and Handle.Call runs in an instance that has
	// served nothing before, started from the module with the plugin's desired config as a
	// restart's would be. After the operation the instance is reset in the background
	// before the slot takes another operation: rewound in place to the state it had fresh
	// with its config (sandbox.Rewinder: memory, globals, random source and clocks; counted
	// in PluginInfo.Rewinds), or, where it cannot be (another format, a module that cannot
	// be snapshotted, a memory that grew, a config that changed), replaced by a new one. A
	// call that finds every slot resetting waits within its context, as for a busy pool. The
	// price is one reset per call, paid off the caller's time but not off the pool's: the
	// pool serves at most Instances calls per reset time. A caller that calls through
	// Host.CallThen gets its result first and then runs the reset on its own goroutine,
	// instead of starting one for it (which, on an idle machine, wakes a CPU on the caller's
	// time).
	//
	// A reset is not a failure: it is not a restart (PluginInfo.Restarts, the restart
	// intensity), keeps the member's incarnation and emits no event; it is counted in
	// PluginInfo.Resets and wasmvisor_instance_resets_total. An operation that ends its
	// instance (a trap, a deadline, the memory limit) follows the failure path of the default
	// mode: counted, supervised, restarted. A fresh instance that cannot start fails its slot
	// the same way. Config updates reach the instances that wait for a call through the
	// guest's configure, as in the default mode; a reset starts with the desired config.
	InstancePerCall
)

func (i Isolation) String() string {
	switch i {
	case SharedInstance:
		return "shared_instance"
	case InstancePerCall:
		return "instance_per_call"
	}
	return "Isolation(" + strconv.Itoa(int(i)) + ")"
}

// instRef is a member's current instance. Under InstancePerCall, used marks it taken by the
// one operation it may serve, and a reset replaces the whole ref.
type instRef struct {
	instance
	used atomic.Bool
}

// take returns the instance an operation of a caller (Call, a delivery, Handle.Call) may
// enter, or nil if, under InstancePerCall, it has been taken already: it is serving its
// operation or being reset. The flag is the per-call mode's only addition to the pool's
// lock (the instance's own busy state): one compare-and-swap per call.
func (m *member) take() *instRef {
	r := m.cur.Load()
	if m.p.isolation == InstancePerCall && !r.used.CompareAndSwap(false, true) {
		return nil
	}
	return r
}

// untake gives back an instance whose operation did not enter it (busy, or its context had
// ended first): it served nothing, and stays pristine.
func (m *member) untake(r *instRef) {
	if m.p.isolation == InstancePerCall {
		r.used.Store(false)
	}
}

// afterUse is after for an operation of a caller that entered m's instance; under
// InstancePerCall it then starts the instance's reset.
func (p *plugin) afterUse(m *member, err error) {
	p.after(m, err)
	if p.isolation == InstancePerCall {
		p.recycle(m, false)
	}
}

// recycle starts the reset of m's used instance in the background, or with inline runs it
// (Host.CallThen), unless the member is ending (after or a stopper ends it) or the instance
// ended after its operation returned (a kill): then after ends the member, as in the default
// mode.
func (p *plugin) recycle(m *member, inline bool) {
	old := m.cur.Load()
	if !old.used.Load() || m.state.Load() != stLive {
		return
	}
	if ierr := old.Err(); ierr != nil {
		p.after(m, ierr)
		return
	}
	m.rmu.Lock()
	if m.ended {
		m.rmu.Unlock()
		return
	}
	if m.rcancel == nil {
		m.rctx, m.rcancel = context.WithCancel(context.Background())
	}
	ctx := m.rctx
	m.resets.Add(1) // never concurrent with stopReset's Wait: ended is set first, under rmu
	m.rmu.Unlock()
	if inline {
		p.resetInstance(ctx, m, old)
		return
	}
	go p.resetInstance(ctx, m, old)
}

// resetInstance makes m's fresh instance and installs it in place of old, which it then
// closes. If the member ended meanwhile (stopReset cancelled ctx), the fresh instance is
// closed instead; if it cannot be made, the member ends with the error, a failure the
// supervisor restarts and counts. It is done (m.resets) once no instance is left for it to
// close: a member's end, which waits for that, finds every instance but its current one
// closed. A new reset may start before it is done (a call on the instance it installed).
func (p *plugin) resetInstance(ctx context.Context, m *member, old *instRef) {
	if f := p.h.opts.resetHook; f != nil {
		f(ctx)
	}
	// The instance is rewound to the state it had fresh, with the config it held then: when
	// another is desired now, a new instance starts with that instead.
	if m.applied.Load() == p.version.Load() && p.rewind(m, old.instance) {
		m.rmu.Lock()
		if !m.ended {
			p.resets.Add(1) // before the instance can serve, as below
			p.rewinds.Add(1)
			m.cur.Store(&instRef{instance: old.instance})
		}
		m.rmu.Unlock()
		m.resets.Done()
		// The rewind was an operation on the member's instance: a stop or kill that came
		// meanwhile found it busy and left the member's end to the operation's end, as for
		// a call (see drain). after ends it then, or hands the slot on.
		p.after(m, nil)
		if f := p.h.opts.resetDone; f != nil {
			f()
		}
		return
	}
	inst, d, err := p.instantiate(ctx, p.mod())
	m.rmu.Lock()
	ended := m.ended
	installed := err == nil && !ended
	stale := false
	if installed {
		p.h.live.Add(1)
		p.resets.Add(1) // before the instance can serve: a caller served after it sees the count
		stale = m.applied.Swap(d.version) != d.version
		m.cur.Store(&instRef{instance: inst})
	}
	m.rmu.Unlock()
	switch {
	case installed:
		old.Retire() // refuses a listing's read that might still come
		p.stats.calls.Add(old.Calls())
		p.closeInstance(m, old) // Close waits for a read in progress
		p.drops.add(old.Stats())
		p.h.live.Add(-1)
		if stale {
			p.notify() // a Configure may wait for this slot to hold its version
		}
		p.afterReset(d.version)
	case err == nil: // the member ended while its instance was made
		_ = inst.Close(context.Background())
	}
	m.resets.Done()
	if installed && m.state.Load() == stStopReq {
		// A stop or kill that came while the reset read or rewound the old instance found it
		// busy and retired it, leaving the member's end to the operation's end (see drain),
		// as for a call: the member ends here, with the instance it holds now (after Done:
		// the end waits for the resets).
		m.drain()
	}
	if err != nil && !ended {
		err = pluginErr(p.name, "reset", err)
		if m.state.Swap(stEnded) == stStopReq || m.reason.Load() != reasonNone {
			err = m.requested()
		}
		m.end(err)
	}
}

// afterReset hands on what waited for a member's reset, whose instance holds config version.
func (p *plugin) afterReset(version uint64) {
	if p.waiters.Load() > 0 {
		p.signal()
	}
	if version != p.version.Load() {
		p.h.kick(p.h.cfgKick)
	}
	if p.pending.Load() > 0 {
		p.h.kick(p.h.bus.kick)
	}
	if f := p.h.opts.resetDone; f != nil {
		f()
	}
}

// checkpoint records a fresh instance's state (InstancePerCall) for its resets to rewind to
// (see rewind). An instance that cannot take one is replaced by a new one at every reset.
func (p *plugin) checkpoint(in instance) {
	if p.isolation != InstancePerCall {
		return
	}
	if rw, ok := in.(sandbox.Rewinder); ok {
		_ = rw.Checkpoint() // refused: Rewind refuses too, and the reset instantiates
	}
}

// rewind resets in, m's instance that served its one operation, in place: back to the state
// it had fresh (with the config it holds), carrying over what it leaves as closeInstance does
// (its events and telemetry, read and folded). It holds the guest state's lock from the read
// to the fold, so no listing reads the instance in between. It reports false, leaving in as it
// was, when in cannot be rewound: then the reset makes a new instance.
func (p *plugin) rewind(m *member, in instance) bool {
	rw, ok := in.(sandbox.Rewinder)
	if !ok {
		return false
	}
	g := &p.guest
	g.mu.Lock()
	defer g.mu.Unlock()
	if log, err := in.EventsWithin(g.cursor[in], nil); err == nil {
		g.appendEvents(m, in, log)
	}
	if tel, err := in.TelemetryWithin(nil); err == nil {
		g.observe(in, tel)
	}
	if rw.Rewind() != nil {
		return false
	}
	g.foldLocked(in)
	return true
}

// stopReset stops m's resets in flight and waits for them: once it returns, no reset
// installs an instance in m or leaks one. end calls it first.
func (m *member) stopReset() {
	m.rmu.Lock()
	m.ended = true
	cancel := m.rcancel
	m.rmu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.resets.Wait()
}
